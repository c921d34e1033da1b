"""Outbound HTTP: the one helper every client of an outside service uses.

    client = HttpClient(service="KYC vendor", base_url=..., connect_timeout=3.05, read_timeout=20)
    response = client.request("POST", "/checks", what="submit", files=...)  # 2xx, or raises

Every call has a connect and a read timeout, no redirects, and the request id
(`X-Request-ID`, core/request_id.py) of the request or task it runs for; each process keeps one pooled
session per client (a prefork child never shares its parent's sockets). Failures are
classified here, once, for every service:

    timeout, connection error, 408, 425, 429, 5xx  -> UpstreamRetryable (Retry-After honoured)
    any other non-2xx (4xx, a redirect), a bad URL  -> UpstreamPermanent

Error messages name the service, the call and the status, plus the service's machine-readable
error code when its JSON body has one (`{"error": "document_unreadable"}`), never its free
text: it may echo what we sent.
"""

import os
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

import requests

from core import request_id
from core.errors import PermanentError, RetryableError

RETRYABLE_STATUSES = frozenset({408, 425, 429})  # plus every 5xx
TRANSIENT_REQUEST_ERRORS: tuple[type[Exception], ...] = (
    requests.Timeout,  # connect and read timeouts
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,  # the connection broke mid-body
    requests.exceptions.ContentDecodingError,
)


class UpstreamRetryable(RetryableError):
    """The service failed in a way another try may not: 5xx, 408/425/429, timeouts, connections."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.status_code = status_code


class UpstreamPermanent(PermanentError):
    """Another try of the same request cannot help: a 4xx, a redirect, a malformed answer."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_STATUSES


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (RFC 9110: delay-seconds or an HTTP date); None when absent or unreadable.

    Fractional seconds ("1.5", which some services send) are accepted; negative ones are not.
    A date without a zone (an obsolete form, or `-0000`) is read as UTC, as RFC 9110 says
    HTTP dates are.
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_code(response: requests.Response) -> str:
    """The service's machine-readable error code, if its JSON body has one (never its free text)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    return str(code)[:60] if isinstance(code, str) and code.replace("_", "").isalnum() else ""


class HttpClient:
    def __init__(
        self,
        *,
        service: str,
        base_url: str,
        connect_timeout: float,
        read_timeout: float,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)
        self.headers = dict(headers or {})
        self._session: tuple[int, requests.Session] | None = None

    def session(self) -> requests.Session:
        if self._session is None or self._session[0] != os.getpid():
            session = requests.Session()
            session.headers.update(self.headers)
            self._session = (os.getpid(), session)
        return self._session[1]

    def request(self, method: str, path: str, *, what: str, **kwargs: Any) -> requests.Response:
        """Send the request; return a 2xx response or raise UpstreamRetryable / UpstreamPermanent."""
        name = f"{self.service} {what}"
        try:
            headers = {request_id.HTTP_HEADER: request_id.get()} if request_id.get() else {}
            headers.update(kwargs.pop("headers", None) or {})
            response = self.session().request(
                method,
                self.base_url + path,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
        except TRANSIENT_REQUEST_ERRORS as exc:
            kind = "timed out" if isinstance(exc, requests.Timeout) else "connection failed"
            raise UpstreamRetryable(f"{name}: {kind} ({type(exc).__name__})") from exc
        except requests.RequestException as exc:  # a bad URL or the like: configuration, not weather
            raise UpstreamPermanent(f"{name}: request failed ({type(exc).__name__})") from exc
        status = response.status_code
        if 200 <= status < 300:
            return response
        code = error_code(response)
        message = f"{name}: HTTP {status}" + (f" ({code})" if code else "")
        if is_retryable_status(status):
            raise UpstreamRetryable(
                message,
                status_code=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        raise UpstreamPermanent(message, status_code=status)


@cache
def client_for(
    service: str, base_url: str, *, scheme: str, api_key: str, connect_timeout: float, read_timeout: float
) -> HttpClient:
    """One client (and so one pooled session) per service and configuration. Callers pass the
    settings on every call: a test that changes them gets a client of its own."""
    return HttpClient(
        service=service,
        base_url=base_url,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        headers={"Authorization": f"{scheme} {api_key}"} if api_key else {},
    )
