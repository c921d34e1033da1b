"""The request id: one id links a request to its tasks and their emails, PDFs and vendor calls.

One name everywhere: the `X-Request-ID` HTTP header (taken from the client when it is a
safe token, made up otherwise, echoed in the response), the `request_id` message header
the outbox stores and the tasks carry, the `request_id` field of every log line, the
`request_id` Sentry tag and the `X-Request-ID` header of outgoing emails and HTTP calls.
Work with no request behind it (a schedule) uses its task chain's root id.
"""

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import sentry_sdk
from django.http import HttpRequest, HttpResponse

HTTP_HEADER = "X-Request-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # anything else is replaced: ids end up in logs

_current: ContextVar[str] = ContextVar("request_id", default="")


def get() -> str:
    return _current.get()


@contextmanager
def bound(request_id: str) -> Iterator[str]:
    token = _current.set(request_id)
    try:
        yield request_id
    finally:
        _current.reset(token)


def bind(request_id: str) -> Callable[[], None]:
    """Set the id until the returned function is called (for signal-based scopes)."""
    token = _current.set(request_id)
    return lambda: _current.reset(token)


def new_id() -> str:
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Binds the request id for the request and echoes it in the response."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HTTP_HEADER, "")
        request_id = incoming if _VALID.match(incoming) else new_id()
        sentry_sdk.set_tag("request_id", request_id)  # per-request scope (Django integration)
        with bound(request_id):
            response = self.get_response(request)
        response[HTTP_HEADER] = request_id
        return response


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (empty outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get()
        return True
