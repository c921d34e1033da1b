"""The trace of a piece of work, carried through the outbox, the relay and the task.

Celery's instrumentations join a task to its request through headers written when the
request publishes. With an outbox the request never publishes: the relay does, later, in
another process. So the context travels with the row instead:

  * enqueue (jobs/outbox.py `build_message`): the row's headers get the W3C `traceparent`
    (and `tracestate`) of the span that enqueued it, usually the request's;
  * relay (jobs/relay.py `publish`): one `outbox publish` span per batch, a trace of its own
    linked to every row's trace; each message also carries `relay_traceparent`;
  * worker (the task_prerun/postrun signals below): one `run <task>` span per delivery,
    a child of the stored context, so the task sits in the request's trace; SQL, HTTP, SMTP
    and PDF spans nest under it.

Where a parent-child relation would be wrong the span links instead, with the reason as an
attribute (`taskyard.link.reason`) on the span and on the link:

  * retry / reschedule: attempt n is still a child of the origin (the request that enqueued
    attempt 1, so one order stays one trace), and links to attempt n-1;
  * replay (jobs/dead_letters.py): a person asked for it, so the run is a child of the admin
    request and links to the attempt that was dead-lettered;
  * publish: every task links to the relay batch that published it;
  * scheduled runs: beat's send is a `beat send <task>` span, the run its child.

Rule of thumb: the parent is what caused the work, a link is what it continues.
No attribute carries task arguments, except ids (`*_id` keys) to find an order's trace by.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from celery import signals
from opentelemetry import context, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from core import tracing

logger = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
LINK_HEADER = "trace_link"  # the traceparent of the span this work continues
LINK_REASON_HEADER = "trace_link_reason"
RELAY_HEADER = "relay_traceparent"
REASON = "taskyard.link.reason"
MAX_PUBLISH_LINKS = 128  # the SDK's default link limit per span; a bigger batch links its first 128


@dataclass(frozen=True)
class _Running:
    """The task running in this process, as the enqueue hook needs it."""

    root_id: str
    attempt: int
    origin: dict[str, str]  # the trace headers its message came with


_running: ContextVar[_Running | None] = ContextVar("taskyard_running_task", default=None)
_open: dict[str, tuple[trace.Span, object, object]] = {}  # task id -> (span, context token, running token)


# --- enqueue ---------------------------------------------------------------------------
def enqueue_headers(headers: dict[str, Any]) -> dict[str, str]:
    """Trace headers for a new outbox row whose other headers are `headers` (never overriding them).

    New work gets the current span as parent. The next message of the running task's own chain
    (same root id: a retry or a reschedule) keeps the chain's origin as parent and links to
    the attempt that wrote it.
    """
    if not tracing.enabled():
        return {}
    running = _running.get()
    if running is not None and str(headers.get("root_id")) == running.root_id:
        attempt = int(headers.get("attempt") or 1)
        trace_headers = dict(running.origin)
        trace_headers[LINK_HEADER] = tracing.inject().get(TRACEPARENT, "")
        trace_headers[LINK_REASON_HEADER] = "retry" if attempt > running.attempt else "reschedule"
    else:
        trace_headers = tracing.inject()
    return {key: value for key, value in trace_headers.items() if value and key not in headers}


def current_headers() -> dict[str, str]:
    """The current span's traceparent, to keep with a record (a dead letter) for a later link."""
    traceparent = tracing.inject().get(TRACEPARENT)
    return {TRACEPARENT: traceparent} if traceparent else {}


def replay_headers(dead_letter_headers: dict[str, Any]) -> dict[str, str]:
    """Headers of a dead letter's replay: a link to the attempt that was dead-lettered."""
    traceparent = dead_letter_headers.get(TRACEPARENT)
    return {LINK_HEADER: str(traceparent), LINK_REASON_HEADER: "replay"} if traceparent else {}


@contextmanager
def write_span(messages: list[Any]) -> Iterator[None]:
    """The outbox INSERT as a span of the enqueuing trace: which tasks, how many."""
    if not tracing.enabled():
        yield
        return
    tasks = sorted({m.task_name for m in messages})
    with tracing.span(
        "outbox write", {"taskyard.outbox.rows": len(messages), "taskyard.outbox.tasks": tasks}
    ):
        yield


# --- relay -----------------------------------------------------------------------------
@contextmanager
def publish_span(rows: list[Any]) -> Iterator[dict[str, str]]:
    """The relay's batch publish as one span, linked to each row's trace; yields the headers
    that let each task link back to it."""
    if not tracing.enabled():
        yield {}
        return
    stored = [(row, tracing.span_context(row.headers.get(TRACEPARENT))) for row in rows[:MAX_PUBLISH_LINKS]]
    links = [
        Link(linked, {REASON: "publish", "messaging.message.id": str(row.id), "taskyard.task": row.task_name})
        for row, linked in stored
        if linked is not None
    ]
    with tracing.tracer().start_as_current_span(
        "outbox publish",
        kind=SpanKind.PRODUCER,
        links=links,
        attributes={
            "messaging.system": "celery",
            "messaging.operation.type": "send",
            "messaging.batch.message_count": len(rows),
        },
    ):
        yield {RELAY_HEADER: tracing.inject().get(TRACEPARENT, "")}


# --- beat ------------------------------------------------------------------------------
@signals.before_task_publish.connect
def _beat_send_span(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    """In beat: each periodic send is a span of its own, and the run its child."""
    if not tracing.enabled() or headers is None or not headers.get("periodic_task_name"):
        return
    span = tracing.tracer().start_span(
        f"beat send {sender}",
        kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "celery", "taskyard.schedule": str(headers["periodic_task_name"])},
    )
    headers.update(tracing.inject(trace.set_span_in_context(span)))
    span.end()


# --- worker ----------------------------------------------------------------------------
def _request_headers(request: Any) -> dict[str, Any]:
    names = (TRACEPARENT, "tracestate", LINK_HEADER, LINK_REASON_HEADER, RELAY_HEADER)
    return {name: value for name in names if (value := getattr(request, name, None))}


def _task_attributes(task: Any, task_id: str, request: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "celery",
        "messaging.operation.type": "process",
        "messaging.message.id": task_id,
        "messaging.destination.name": str((request.delivery_info or {}).get("routing_key") or ""),
        "taskyard.task": task.name,
        "taskyard.task.attempt": int(getattr(request, "attempt", None) or 1),
        "taskyard.request_id": str(getattr(request, "request_id", None) or ""),
    }
    for key, value in (request.kwargs or {}).items():
        if key.endswith("_id") and isinstance(value, int | str) and len(str(value)) <= 64:
            attributes[f"taskyard.task.{key}"] = value  # ids only: they find the trace, say nothing
    return attributes


@signals.task_prerun.connect
def _start_task_span(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    if not tracing.enabled() or request is None or task_id is None:
        return
    headers = _request_headers(request)
    links = []
    attributes = _task_attributes(task, task_id, request)
    if (previous := tracing.span_context(headers.get(LINK_HEADER))) is not None:
        reason = str(headers.get(LINK_REASON_HEADER) or "continues")
        links.append(Link(previous, {REASON: reason}))
        attributes[REASON] = reason
    if (publish := tracing.span_context(headers.get(RELAY_HEADER))) is not None:
        links.append(Link(publish, {REASON: "publish"}))
    span = tracing.tracer().start_span(
        f"run {task.name}",
        context=tracing.extract(headers),
        kind=SpanKind.CONSUMER,
        links=links,
        attributes=attributes,
    )
    origin = {key: str(headers[key]) for key in (TRACEPARENT, "tracestate") if key in headers}
    running = _Running(
        str(getattr(request, "root_id", None) or task_id), int(attributes["taskyard.task.attempt"]), origin
    )
    _open[task_id] = (span, context.attach(trace.set_span_in_context(span)), _running.set(running))


OUTCOME = "taskyard.task.outcome"
_CELERY_OUTCOMES = ("succeeded", "failed", "retried")  # come last; what the base task said wins


def set_outcome(outcome: str) -> None:
    """The task's outcome on its span: duplicate, rescheduled, dead_lettered, or Celery's own."""
    span = trace.get_current_span()
    said = OUTCOME in (getattr(span, "attributes", None) or {})
    if outcome != "started" and not (said and outcome in _CELERY_OUTCOMES):
        span.set_attribute(OUTCOME, outcome)


def _failed(task_id: str | None, exc: BaseException | None, description: str) -> None:
    entry = _open.get(task_id or "")
    if entry is None:
        return
    span = entry[0]
    if exc is not None:
        span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, description))


@signals.task_retry.connect
def _on_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    exc = getattr(reason, "exc", None) or reason  # Celery passes its Retry; the cause is inside
    exc = exc if isinstance(exc, BaseException) else None
    _failed(getattr(request, "id", None), exc, f"retry: {type(exc).__name__ if exc else reason}")


@signals.task_failure.connect
def _on_failure(task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    _failed(task_id, exception, type(exception).__name__ if exception else "failed")


@signals.task_postrun.connect
def _end_task_span(task_id: str | None = None, **_: Any) -> None:
    entry = _open.pop(task_id or "", None)
    if entry is None:
        return
    span, context_token, running_token = entry
    span.end()
    _running.reset(running_token)  # type: ignore[arg-type]
    context.detach(context_token)  # type: ignore[arg-type]
