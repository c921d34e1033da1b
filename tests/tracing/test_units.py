"""The tracing pieces in-process: switch, roles, sampler, PII scrubbing, log and Sentry fields,
beat's send span, and the collector's hand-over to Spotlight."""

import json
import logging
import time

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from core import sentry, tracing
from core.redact import redact
from fakes.otlp_collector import SpotlightForwarder
from jobs import tracing as job_tracing
from tests.sentry_ingest import SentryIngest

EMAIL = "alice.private@example.com"


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """Tracing on in this process, exporting through the redacting exporter to memory."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(sampler=tracing.sampler({}))
    provider.add_span_processor(SimpleSpanProcessor(tracing.RedactingExporter(memory)))
    monkeypatch.setattr(tracing, "_provider", provider)
    return memory


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_with_an_endpoint_and_not_disabled(environ, on):
    assert tracing.configured(environ) is on


@pytest.mark.parametrize(
    ("argv", "role"),
    [
        (["/venv/bin/gunicorn", "config.wsgi"], "web"),
        (["/venv/lib/python3.13/site-packages/gunicorn/__main__.py", "config.wsgi"], "web"),
        (["manage.py", "relay_outbox"], "relay"),
        (["manage.py", "migrate"], None),
        (["/venv/bin/celery", "-A", "config", "worker", "-Q", "emails"], "worker"),
        (["/venv/lib/python3.13/site-packages/celery/__main__.py", "-A", "config", "beat"], "beat"),
        (["/venv/bin/pytest"], None),
    ],
)
def test_only_the_long_running_processes_trace(argv, role):
    assert tracing.process_role(argv) == role


def test_a_query_outside_any_trace_is_dropped_but_kept_inside_one(exported):
    tracer = tracing.tracer()
    with tracer.start_as_current_span("poll", kind=SpanKind.CLIENT):
        pass
    with (
        tracer.start_as_current_span("request", kind=SpanKind.SERVER),
        tracing.span("SELECT", kind=SpanKind.CLIENT),
    ):
        pass
    assert [s.name for s in exported.get_finished_spans()] == ["SELECT", "request"]


def record_a_failing_request() -> None:
    with tracing.span("POST /api/orders", kind=SpanKind.SERVER) as span:
        span.set_attributes(
            {
                "http.url": f"https://user:pw@api.test/api/orders?email={EMAIL}",
                "client.address": "203.0.113.9",
                "user_agent.original": f"curl ({EMAIL})",
                "taskyard.note": f"for {EMAIL}, Authorization: Token abcdef0123456789",
                "taskyard.order_id": 42,
            }
        )
        raise ValueError(f"no such user {EMAIL}")


def test_no_pii_leaves_the_process(exported):
    with pytest.raises(ValueError, match="no such user"):
        record_a_failing_request()
    [span] = exported.get_finished_spans()
    everything = json.dumps(
        [
            dict(span.attributes or {}),
            [dict(e.attributes or {}) for e in span.events],
            span.status.description,
        ]
    )
    assert EMAIL not in everything
    assert "203.0.113.9" not in everything
    assert "abcdef0123456789" not in everything
    assert span.attributes["http.url"] == "https://api.test/api/orders"
    assert span.attributes["taskyard.order_id"] == 42  # ids stay: they find the trace
    assert "<email>" in span.status.description  # the message is kept, redacted


@pytest.mark.parametrize(
    "text",
    [
        f"to {EMAIL}",
        "Authorization: Token abcdef0123456789",
        "password=hunter2",
        "API-KEY: s3cr3tvalue",
        "Bearer abcdefgh12345678",
    ],
)
def test_the_fast_path_of_redaction_still_catches_each_kind(text):
    assert redact(text) != text
    assert redact("SELECT id FROM orders_order WHERE id = %s") == "SELECT id FROM orders_order WHERE id = %s"


def test_log_lines_and_sentry_events_carry_the_trace(exported):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    with tracing.span("run task") as span:
        tracing.TraceContextFilter().filter(record)
        event = sentry.scrub_event({"contexts": {"trace": {"trace_id": "0" * 32, "op": "queue"}}}, {})
    ids = (
        trace.format_trace_id(span.get_span_context().trace_id),
        trace.format_span_id(span.get_span_context().span_id),
    )
    assert (getattr(record, "trace_id"), getattr(record, "span_id")) == ids  # noqa: B009
    assert event["tags"]["trace_id"] == ids[0]
    assert (event["contexts"]["trace"]["trace_id"], event["contexts"]["trace"]["span_id"]) == ids
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    tracing.TraceContextFilter().filter(outside)
    assert (getattr(outside, "trace_id"), getattr(outside, "span_id")) == ("", "")  # noqa: B009


def test_new_work_is_a_child_of_the_span_that_enqueued_it(exported):
    assert job_tracing.enqueue_headers({"root_id": "r1"}) == job_tracing.enqueue_headers({}) == {}
    with tracing.span("POST /api/orders") as span:
        headers = job_tracing.enqueue_headers({"root_id": "r1", "attempt": 1})
        kept = job_tracing.enqueue_headers({"root_id": "r1", "traceparent": "given"})
    assert headers["traceparent"].split("-")[2] == trace.format_span_id(span.get_span_context().span_id)
    assert "traceparent" not in kept  # what the caller set is never overridden


def test_a_scheduled_run_starts_at_beats_send(exported):
    headers = {"periodic_task_name": "fx-sync-hourly"}
    job_tracing._beat_send_span(sender="fx.sync_rates", headers=headers)
    [span] = exported.get_finished_spans()
    assert (span.name, span.kind, span.parent) == ("beat send fx.sync_rates", SpanKind.PRODUCER, None)
    assert headers["traceparent"].split("-")[2] == trace.format_span_id(span.get_span_context().span_id)
    relayed = {"root_id": "r1"}
    job_tracing._beat_send_span(sender="orders.send_confirmation_email", headers=relayed)
    assert relayed == {"root_id": "r1"}  # not a beat message: left alone


def test_the_collector_hands_each_process_part_of_a_trace_to_spotlight_as_a_transaction():
    ingest = SentryIngest()
    try:
        url = f"http://127.0.0.1:{ingest.server.server_address[1]}/stream"
        now = time.time()

        def span(span_id, parent, name, kind, service, remote=False, **attributes):
            return {
                "trace_id": "a" * 32,
                "span_id": span_id,
                "parent_span_id": parent,
                "parent_is_remote": remote,
                "name": name,
                "kind": kind,
                "service": service,
                "start": now,
                "end": now + 0.01,
                "attributes": attributes,
                "status": {"code": 0, "message": ""},
            }

        forwarder = SpotlightForwarder(url)
        # children arrive first (they end first); the local roots complete the parts
        assert (
            forwarder.add(
                [span("2" * 16, "1" * 16, "SELECT", "client", "taskyard-web", **{"db.system": "postgresql"})]
            )
            == []
        )
        web, worker = forwarder.add(
            [
                span("1" * 16, "", "POST orders/", "server", "taskyard-web"),
                span("4" * 16, "3" * 16, "smtp send", "client", "taskyard-worker"),
                span(
                    "3" * 16,
                    "1" * 16,
                    "run orders.send_confirmation_email",
                    "consumer",
                    "taskyard-worker",
                    True,
                ),
            ]
        )
        assert (web["transaction"], [s["op"] for s in web["spans"]]) == ("POST orders/", ["db"])
        assert worker["contexts"]["trace"]["parent_span_id"] == "1" * 16  # joins the request's trace
        assert [s["description"] for s in worker["spans"]] == ["smtp send"]
        received = [json.loads(envelope.split(b"\n")[2]) for envelope in ingest.envelopes]
        assert [t["transaction"] for t in received] == ["POST orders/", "run orders.send_confirmation_email"]
    finally:
        ingest.close()
