"""OpenTelemetry: one tracer provider per process, exporting over OTLP/HTTP; off unless configured.

On when the standard variables say so: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not `true`. Everything
else is the SDK's own configuration: `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*` (the batch
span processor), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, and the sampler
(`OTEL_TRACES_SAMPLER=parentbased_traceidratio`, `OTEL_TRACES_SAMPLER_ARG=0.1`). Off, no
provider is installed: every span is the API's no-op and costs a function call.

`setup(role)` runs once per process (core/apps.py) for the long-running roles only (web, relay,
worker, beat; a `migrate` is not worth a trace) and instruments Django, psycopg and requests.
The outbox, relay and tasks carry the context themselves (jobs/tracing.py).

No PII leaves the process (the Sentry rules of core/sentry.py): client addresses, user agents
and query strings are dropped, and every other string attribute, event and status message
passes through core.redact before export (`RedactingExporter`).
"""

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status
from opentelemetry.util.types import Attributes

from core.redact import redact

logger = logging.getLogger(__name__)

TRACER_NAME = "taskyard"
# Probes and scrapes every few seconds are not worth a trace each.
EXCLUDED_URLS = "healthz,readyz,metrics,static/"

# Attributes the instrumentations set that identify a person or carry what they sent.
DROPPED_ATTRIBUTES = frozenset(
    {
        "client.address",
        "http.client_ip",
        "net.peer.ip",
        "net.sock.peer.addr",
        "network.peer.address",
        "user_agent.original",
        "http.user_agent",
        "url.query",
        "enduser.id",
    }
)
URL_ATTRIBUTES = frozenset({"http.url", "url.full", "http.target"})  # kept without query or userinfo

_provider: TracerProvider | None = None


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def enabled() -> bool:
    return _provider is not None


def process_role(argv: Sequence[str] = sys.argv) -> str | None:
    """web, relay, worker or beat, from the command line; None for anything else (a shell, migrate)."""
    if not argv:
        return None
    program = argv[0]
    if "gunicorn" in program:
        return "web"
    if Path(program).name == "manage.py" and len(argv) > 1:
        return {"relay_outbox": "relay", "runserver": "web"}.get(argv[1])
    if "celery" in program:
        return next((word for word in ("worker", "beat") if word in argv[1:]), None)
    return None


class _NoOrphanClientSpans(Sampler):
    """Drops a client span that starts a trace: the relay's polling SQL, a worker's heartbeat
    UPDATE, beat's schedule reads. A query outside any traced work is noise, not a trace."""

    def __init__(self, root: Sampler) -> None:
        self._root = root

    def should_sample(
        self,
        parent_context: context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._root.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"NoOrphanClientSpans{{{self._root.get_description()}}}"


def sampler(environ: Mapping[str, str] = os.environ) -> Sampler:
    """Parent-based: a task follows the decision of the request that enqueued it."""
    ratio = 1.0
    if environ.get("OTEL_TRACES_SAMPLER", "") in ("traceidratio", "parentbased_traceidratio"):
        ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    return ParentBased(root=_NoOrphanClientSpans(TraceIdRatioBased(ratio)))


# --- PII scrubbing at export ---------------------------------------------------------
def _strip_url(value: str) -> str:
    parts = urlsplit(value)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The attributes without PII, or None when nothing had to change."""
    if not attributes:
        return None
    clean: dict[str, Any] = {}
    changed = False
    for key, value in attributes.items():
        if key in DROPPED_ATTRIBUTES:
            changed = True
            continue
        if isinstance(value, str):
            new: Any = _strip_url(value) if key in URL_ATTRIBUTES else redact(value)
        elif isinstance(value, tuple | list) and value and isinstance(value[0], str):
            new = tuple(redact(item) for item in value)
            changed = changed or list(new) != list(value)
            clean[key] = new
            continue
        else:
            new = value
        changed = changed or new != value
        clean[key] = new
    return clean if changed else None


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """The span as it may leave the process: a scrubbed copy, or itself when it was clean."""
    attributes = scrub_attributes(span.attributes)
    events: list[Event] = []
    events_changed = False
    for event in span.events:
        event_attributes = scrub_attributes(event.attributes)
        events_changed = events_changed or event_attributes is not None
        events.append(
            Event(event.name, event_attributes, event.timestamp) if event_attributes is not None else event
        )
    description = span.status.description
    clean_description = redact(description) if description else description
    if attributes is None and not events_changed and clean_description == description:
        return span
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes if attributes is not None else span.attributes,
        events=events,
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code, clean_description),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class RedactingExporter(SpanExporter):
    """Scrubs each span (in the batch processor's thread, off the request path), then exports."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrub_span(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


# --- setup ---------------------------------------------------------------------------
def setup(role: str) -> bool:
    """Install the provider, the OTLP exporter and the instrumentations; False when tracing is off."""
    global _provider
    if _provider is not None:
        return True
    if not configured():
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or f"taskyard-{role}",
            "service.namespace": "taskyard",
            "taskyard.process": role,
        }
    )
    provider = TracerProvider(resource=resource, sampler=sampler())
    provider.add_span_processor(BatchSpanProcessor(RedactingExporter(OTLPSpanExporter())))
    trace.set_tracer_provider(provider)
    _provider = provider
    _instrument(role)
    logger.info("tracing on: %s exporting over OTLP/HTTP", resource.attributes["service.name"])
    return True


def _instrument(role: str) -> None:
    """Django (web), psycopg (every SQL statement inside a trace) and requests (vendor and FX
    calls), less any named in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS (`psycopg` saves most of
    the cost: docs/performance.md)."""
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    variable = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    disabled = {name.strip() for name in variable.split(",")}
    if role == "web" and "django" not in disabled:
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument(excluded_urls=EXCLUDED_URLS)
    if role != "beat" and "psycopg" not in disabled:
        PsycopgInstrumentor().instrument(skip_dep_check=True)
    if role in ("web", "worker") and "requests" not in disabled:
        RequestsInstrumentor().instrument()


# --- helpers for the code that carries context ----------------------------------------
def tracer() -> trace.Tracer:
    provider = _provider or trace.get_tracer_provider()
    return provider.get_tracer(TRACER_NAME)


def span(
    name: str, attributes: Attributes = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> AbstractContextManager[trace.Span]:
    """A child span of the current one; an exception leaving it is recorded and marks it failed."""
    return tracer().start_as_current_span(name, kind=kind, attributes=attributes)


def current_ids() -> tuple[str, str]:
    """(trace id, span id) of the current span as hex, or ("", "") outside one."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", ""
    return trace.format_trace_id(span_context.trace_id), trace.format_span_id(span_context.span_id)


def inject(ctx: context.Context | None = None) -> dict[str, str]:
    """The W3C headers (traceparent, tracestate) of the current (or given) context; {} outside a span."""
    carrier: dict[str, str] = {}
    if enabled():
        propagate.inject(carrier, context=ctx)
    return carrier


def extract(headers: Mapping[str, Any]) -> context.Context | None:
    """The context stored in message headers, or None when they carry none."""
    if not headers.get("traceparent"):
        return None
    carrier = {key: str(value) for key, value in headers.items() if key in ("traceparent", "tracestate")}
    return propagate.extract(carrier)


def span_context(traceparent: Any) -> trace.SpanContext | None:
    """The span a stored traceparent points at (for a link), or None."""
    if not traceparent:
        return None
    ctx = extract({"traceparent": traceparent})
    span_context = trace.get_current_span(ctx).get_span_context()
    return span_context if span_context.is_valid else None


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` and `span_id` to every record (empty outside a span), so a log line
    leads to its trace and a trace to its log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.trace_id, record.span_id = current_ids()
        return True
