"""Sentry for web, worker and beat (initialised from settings when SENTRY_DSN is set).

No PII leaves the process: `send_default_pii=False` (no cookies, user details or client
IPs), no request bodies (KYC documents!), no local variables, task arguments replaced,
sensitive headers dropped, and every remaining string passed through core.redact
(emails, tokens, passwords). Tasks tag their events with name, id, attempt, queue
and request id (jobs/base_task.py), never with their arguments.

With tracing on (core/tracing.py), an event carries the OpenTelemetry trace it happened in,
as its trace context (where Sentry's own integrations would put a trace of their own) and as
a `trace_id` tag to search by, so an error leads to its trace.
"""

import logging
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.logging import LoggingIntegration

from core import tracing
from core.redact import redact

DROPPED_HEADERS = {
    "authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "proxy-authorization",
    "idempotency-key",
}


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def scrub_event(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    request = event.get("request") or {}
    request.pop("data", None)
    request.pop("cookies", None)
    request.pop("query_string", None)
    if isinstance(request.get("headers"), dict):
        request["headers"] = {k: v for k, v in request["headers"].items() if k.lower() not in DROPPED_HEADERS}
    job = (event.get("extra") or {}).get("celery-job")
    if isinstance(job, dict):
        job.pop("args", None)
        job.pop("kwargs", None)
    trace_id, span_id = tracing.current_ids()
    if trace_id:
        event.setdefault("tags", {})["trace_id"] = trace_id
        event.setdefault("contexts", {})["trace"] = {
            **(event["contexts"].get("trace") or {}),
            "trace_id": trace_id,
            "span_id": span_id,
            "parent_span_id": None,
        }
    user = event.get("user")
    if isinstance(user, dict):
        event["user"] = {"id": user["id"]} if "id" in user else {}
    return _scrub(event)


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    return _scrub(crumb)


def init_sentry(*, dsn: str, environment: str, release: str, traces_sample_rate: float) -> None:
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release or None,
        integrations=[
            DjangoIntegration(),
            CeleryIntegration(monitor_beat_tasks=False),
            # Logs become breadcrumbs only; events come from exceptions, so a dead letter is one event.
            LoggingIntegration(level=logging.INFO, event_level=None),
        ],
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,  # type: ignore[arg-type]
        before_breadcrumb=scrub_breadcrumb,
        traces_sample_rate=traces_sample_rate,
    )
