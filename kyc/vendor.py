"""HTTP client of the KYC vendor. Every failure is classified here, once:

    timeout, connection error, 408, 425, 429, 5xx  -> VendorRetryableError (Retry-After honoured)
    any other 4xx, a redirect, a malformed answer   -> VendorPermanentError

    POST /checks        multipart: document_type + files; header Idempotency-Key
                        (the submission id: a repeated submit returns the same check)
    GET  /checks/<id>   {"id", "status": pending|approved|rejected|manual_review, "reason_codes"}

Every call has a connect and a read timeout. The rate limit is not this module's
business: callers take a token first (kyc/checks.py).
"""

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO
from urllib.parse import quote

import requests
from django.conf import settings
from django.core.files import File

from kyc.errors import VendorPermanentError, VendorRetryableError

FINAL_STATUSES = ("approved", "rejected", "manual_review")
STATUSES = ("pending", *FINAL_STATUSES)
RETRYABLE_STATUS = frozenset({408, 425, 429})
MAX_REASON_CODES = 20


@dataclass(frozen=True)
class VendorResult:
    check_id: str
    status: str  # pending | approved | rejected | manual_review
    reason_codes: list[str] = field(default_factory=list)
    status_code: int = 200

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class Upload:
    content: BinaryIO | File[Any]
    content_type: str
    name: str  # a neutral name ("document-1.pdf"), never the client's


_session: tuple[int, requests.Session] | None = None


def _http() -> requests.Session:
    """One pooled session per process (a prefork child must not share its parent's sockets)."""
    global _session
    if _session is None or _session[0] != os.getpid():
        session = requests.Session()
        if settings.KYC_VENDOR_API_KEY:
            session.headers["Authorization"] = f"Token {settings.KYC_VENDOR_API_KEY}"
        _session = (os.getpid(), session)
    return _session[1]


def _timeout() -> tuple[float, float]:
    return (settings.KYC_VENDOR_CONNECT_TIMEOUT, settings.KYC_VENDOR_READ_TIMEOUT)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _vendor_code(response: requests.Response) -> str:
    """The vendor's machine-readable error code, if it sent one (never its free text)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    return str(code)[:60] if isinstance(code, str) and code.replace("_", "").isalnum() else ""


def _classify(response: requests.Response, what: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    code = _vendor_code(response)
    message = f"vendor {what}: HTTP {status}" + (f" ({code})" if code else "")
    if status >= 500 or status in RETRYABLE_STATUS:
        raise VendorRetryableError(
            message, status_code=status, retry_after=retry_after_seconds(response.headers.get("Retry-After"))
        )
    raise VendorPermanentError(message, status_code=status)


def _call(method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
    url = settings.KYC_VENDOR_URL.rstrip("/") + path
    try:
        response = _http().request(method, url, timeout=_timeout(), allow_redirects=False, **kwargs)
    except requests.Timeout as exc:
        raise VendorRetryableError(f"vendor {what}: timed out ({type(exc).__name__})") from exc
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise VendorRetryableError(f"vendor {what}: connection failed ({type(exc).__name__})") from exc
    except requests.RequestException as exc:  # a bad URL or the like: configuration, not weather
        raise VendorPermanentError(f"vendor {what}: request failed ({type(exc).__name__})") from exc
    _classify(response, what)
    return response


def _result(response: requests.Response, what: str) -> VendorResult:
    try:
        body = response.json()
    except ValueError as exc:
        raise VendorPermanentError(
            f"vendor {what}: answer is not JSON", status_code=response.status_code
        ) from exc
    check_id = body.get("id") if isinstance(body, dict) else None
    status = body.get("status") if isinstance(body, dict) else None
    codes = body.get("reason_codes", []) if isinstance(body, dict) else None
    if not isinstance(check_id, str) or not check_id or status not in STATUSES or not isinstance(codes, list):
        raise VendorPermanentError(f"vendor {what}: unexpected answer", status_code=response.status_code)
    return VendorResult(
        check_id=check_id[:100],
        status=str(status),
        reason_codes=[str(c)[:60] for c in codes[:MAX_REASON_CODES]],
        status_code=response.status_code,
    )


def submit_check(*, idempotency_key: str, document_type: str, documents: list[Upload]) -> VendorResult:
    """Send the documents; the same key always names the same check at the vendor."""
    response = _call(
        "POST",
        "/checks",
        "submit",
        headers={"Idempotency-Key": idempotency_key},
        data={"document_type": document_type},
        files=[("files", (d.name, d.content, d.content_type)) for d in documents],
    )
    return _result(response, "submit")


def get_check(check_id: str) -> VendorResult:
    response = _call("GET", f"/checks/{quote(check_id, safe='')}", "poll")
    return _result(response, "poll")
