"""Errors as RFC 9457 problem details, from one place.

Every error the API returns has the same shape, content type
`application/problem+json`:

    {"type": "urn:taskyard:problem:validation-error", "title": "...", "status": 400,
     "detail": "...", "code": "validation-error", "errors": {"lines.0.sku": ["..."]}}

`code` is the stable machine-readable name; `errors` maps dotted field paths to
messages and is present only for field errors. Domain code raises a subclass of
`ApplicationError` (each app has one in its errors.py); DRF and Django exceptions
are translated here, so views never build error responses themselves.
"""

import sys
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.csrf import csrf_failure as django_csrf_failure
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.views import set_rollback

PROBLEM_CONTENT_TYPE = "application/problem+json"


class ApplicationError(Exception):
    """Base of every domain error. Subclasses set `status_code`, `code` and `title`."""

    status_code = 400
    code = "application-error"
    title = "The request could not be processed"

    headers: dict[str, str] | None = None  # e.g. Retry-After

    def __init__(self, detail: str, *, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


def problem(
    status: int,
    code: str,
    title: str,
    detail: str = "",
    errors: dict[str, list[str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:taskyard:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure -> {"lines.0.sku": ["..."]}."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "non_field_errors" if key == "non_field_errors" and not prefix else str(key)
            out.update(flatten_errors(value, f"{prefix}.{name}" if prefix else name))
    elif isinstance(detail, list) and detail and all(isinstance(d, (dict, list)) for d in detail):
        for index, value in enumerate(detail):
            out.update(flatten_errors(value, f"{prefix}.{index}" if prefix else str(index)))
    elif isinstance(detail, list):
        out[prefix or "non_field_errors"] = [str(d) for d in detail]
    else:
        out[prefix or "non_field_errors"] = [str(detail)]
    return {k: v for k, v in out.items() if v}


_DRF_CODES: dict[type[drf.APIException], tuple[str, str]] = {
    drf.NotAuthenticated: ("not-authenticated", "Authentication required"),
    drf.AuthenticationFailed: ("authentication-failed", "Authentication failed"),
    drf.PermissionDenied: ("permission-denied", "Permission denied"),
    drf.NotFound: ("not-found", "Not found"),
    drf.MethodNotAllowed: ("method-not-allowed", "Method not allowed"),
    drf.NotAcceptable: ("not-acceptable", "Not acceptable"),
    drf.UnsupportedMediaType: ("unsupported-media-type", "Unsupported media type"),
    drf.Throttled: ("throttled", "Too many requests"),
    drf.ParseError: ("parse-error", "Malformed request body"),
}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: every handled error becomes a problem response."""
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = drf.ValidationError(detail=exc.message_dict if hasattr(exc, "error_dict") else exc.messages)

    headers: dict[str, str] = {}
    if isinstance(exc, ApplicationError):
        body = problem(exc.status_code, exc.code, exc.title, exc.detail, exc.errors)
        headers.update(exc.headers or {})
    elif isinstance(exc, drf.ValidationError):
        body = problem(
            400,
            "validation-error",
            "The request has invalid fields",
            "Fix the fields listed in `errors` and send the request again.",
            flatten_errors(exc.detail),
        )
    elif isinstance(exc, drf.APIException):
        code, title = _DRF_CODES.get(type(exc), ("error", "Request failed"))
        body = problem(exc.status_code, code, title, str(exc.detail))
        wait = getattr(exc, "wait", None)
        if isinstance(exc, drf.Throttled) and wait is not None:
            headers["Retry-After"] = str(int(wait) + 1)
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
    elif isinstance(exc, DATABASE_UNAVAILABLE):
        body, headers = _database_unavailable()
    else:
        return None  # unexpected: Django's 500 handler answers and Sentry sees it

    set_rollback()
    return Response(body, status=body["status"], headers=headers, content_type=PROBLEM_CONTENT_TYPE)


# PostgreSQL refused the connection, or dropped it mid-request: nothing was accepted (a
# transaction that did not commit left nothing), and the client may send the request again.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER = "5"  # seconds


def _database_unavailable() -> tuple[dict[str, Any], dict[str, str]]:
    body = problem(
        503,
        "database-unavailable",
        "The database is unavailable",
        "Nothing was saved. Send the request again in a few seconds.",
    )
    return body, {"Retry-After": DATABASE_RETRY_AFTER}


def problem_response(
    status: int, code: str, title: str, detail: str = "", headers: dict[str, str] | None = None
) -> JsonResponse:
    """A problem+json response outside DRF (middleware, Django's error handlers)."""
    response = JsonResponse(
        problem(status, code, title, detail), status=status, content_type=PROBLEM_CONTENT_TYPE
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# --- Django's error handlers (config/urls.py) and views for errors outside DRF. They never
# echo what the client sent (a path, a host header): it is the client's, and it may be huge.
def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404, and every unknown URL under /api/ (routed here even with DEBUG on)."""
    return problem_response(404, "not-found", "Not found", "No resource matches this URL.")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: a request Django refused before any view (DisallowedHost, a malformed body)."""
    return problem_response(400, "bad-request", "Bad request", "The request could not be understood.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403."""
    return problem_response(403, "permission-denied", "Permission denied")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a stable body; the details go to logs and Sentry, never to the client. A
    database outage outside DRF (a middleware's query) is a 503, as inside it."""
    if isinstance(sys.exc_info()[1], DATABASE_UNAVAILABLE):
        body, headers = _database_unavailable()
        return problem_response(503, body["code"], body["title"], body["detail"], headers)
    return problem_response(500, "server-error", "Internal server error", "The error was logged.")


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: problem+json under /api/, Django's explanatory page elsewhere (admin)."""
    if request.path.startswith("/api/"):
        return problem_response(
            403, "csrf-failed", "CSRF check failed", "Send the CSRF token, or use a token."
        )
    return django_csrf_failure(request, reason)
