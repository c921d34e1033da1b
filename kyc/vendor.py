"""HTTP client of the KYC vendor, on core/http.py (timeouts, pooled session, failures
classified once: 5xx/408/425/429/timeouts retryable with Retry-After, any other 4xx, a
redirect or a malformed answer permanent).

    POST /checks        multipart: document_type + files; header Idempotency-Key
                        (the submission id: a repeated submit returns the same check)
    GET  /checks/<id>   {"id", "status": pending|approved|rejected|manual_review, "reason_codes"}

Every call has a connect and a read timeout. The rate limit is not this module's
business: callers take a token first (kyc/checks.py).
"""

from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import quote

import requests
from django.conf import settings
from django.core.files import File

from core.http import HttpClient, UpstreamPermanent, client_for

FINAL_STATUSES = ("approved", "rejected", "manual_review")
STATUSES = ("pending", *FINAL_STATUSES)
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


def _client() -> HttpClient:
    return client_for(
        "vendor",
        settings.KYC_VENDOR_URL,
        scheme="Token",
        api_key=settings.KYC_VENDOR_API_KEY,
        connect_timeout=settings.KYC_VENDOR_CONNECT_TIMEOUT,
        read_timeout=settings.KYC_VENDOR_READ_TIMEOUT,
    )


def _result(response: requests.Response, what: str) -> VendorResult:
    try:
        body = response.json()
    except ValueError as exc:
        raise UpstreamPermanent(
            f"vendor {what}: answer is not JSON", status_code=response.status_code
        ) from exc
    check_id = body.get("id") if isinstance(body, dict) else None
    status = body.get("status") if isinstance(body, dict) else None
    codes = body.get("reason_codes", []) if isinstance(body, dict) else None
    if not isinstance(check_id, str) or not check_id or status not in STATUSES or not isinstance(codes, list):
        raise UpstreamPermanent(f"vendor {what}: unexpected answer", status_code=response.status_code)
    return VendorResult(
        check_id=check_id[:100],
        status=str(status),
        reason_codes=[str(c)[:60] for c in codes[:MAX_REASON_CODES]],
        status_code=response.status_code,
    )


def submit_check(*, idempotency_key: str, document_type: str, documents: list[Upload]) -> VendorResult:
    """Send the documents; the same key always names the same check at the vendor."""
    response = _client().request(
        "POST",
        "/checks",
        what="submit",
        headers={"Idempotency-Key": idempotency_key},
        data={"document_type": document_type},
        files=[("files", (d.name, d.content, d.content_type)) for d in documents],
    )
    return _result(response, "submit")


def get_check(check_id: str) -> VendorResult:
    response = _client().request("GET", f"/checks/{quote(check_id, safe='')}", what="poll")
    return _result(response, "poll")
