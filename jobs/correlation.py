"""Correlation ids: one id links a request to its tasks and their emails, PDFs, vendor calls.

The web middleware takes X-Request-ID (or makes one), the outbox stores it in the
message headers, the base task binds it while the task runs, and a logging filter
adds it to every log record.
"""

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

import sentry_sdk
from celery import signals
from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # anything else is replaced: ids end up in logs

_current: ContextVar[str] = ContextVar("correlation_id", default="")


def get() -> str:
    return _current.get()


@contextmanager
def bound(correlation_id: str) -> Iterator[str]:
    token = _current.set(correlation_id)
    try:
        yield correlation_id
    finally:
        _current.reset(token)


def new_id() -> str:
    return uuid.uuid4().hex


class CorrelationIdMiddleware:
    """Binds the request id for the request and echoes it in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if _VALID.match(incoming) else new_id()
        sentry_sdk.set_tag("correlation_id", request_id)  # per-request scope (Django integration)
        with bound(request_id):
            response = self.get_response(request)
        response[HEADER] = request_id
        return response


# --- tasks: bound from task_prerun to task_postrun, so Celery's own "succeeded in" and
# "raised" log lines in the pool child carry the id too, not only the task's own logs.
_task_tokens: dict[str, Token[str]] = {}


@signals.task_prerun.connect
def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    value = getattr(request, "request_id", None) or getattr(request, "root_id", None) or task_id or ""
    _task_tokens[task_id or ""] = _current.set(str(value))


@signals.task_postrun.connect
def _unbind_task(task_id: str | None = None, **_: Any) -> None:
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        _current.reset(token)


class CorrelationIdFilter(logging.Filter):
    """Adds `correlation_id` to every record (empty outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = _current.get()
        return True
