"""HTTP client of the payment provider, on core/http.py (timeouts, pooled session, failures
classified once: 5xx/408/425/429/timeouts retryable with Retry-After, any other 4xx permanent;
402 is a decline).

    POST /captures   {"reference", "amount", "currency"}; header Idempotency-Key: the same key
                     always names the same capture at the provider, so a retry (after a timeout,
                     a worker killed mid-call) gets the first capture back instead of a second one.
"""

from dataclasses import dataclass

from django.conf import settings

from core.http import UpstreamPermanent, client_for
from fulfilment.errors import PaymentDeclined


@dataclass(frozen=True)
class CaptureResult:
    capture_id: str
    replayed: bool  # the provider had this key already: the first capture, returned again


def capture(*, idempotency_key: str, reference: str, amount: str, currency: str) -> CaptureResult:
    client = client_for(
        "payment provider",
        settings.PAYMENT_PROVIDER_URL,
        scheme="Bearer",
        api_key=settings.PAYMENT_PROVIDER_API_KEY,
        connect_timeout=settings.PAYMENT_PROVIDER_CONNECT_TIMEOUT,
        read_timeout=settings.PAYMENT_PROVIDER_READ_TIMEOUT,
    )
    try:
        response = client.request(
            "POST",
            "/captures",
            what="capture",
            headers={"Idempotency-Key": idempotency_key},
            json={"reference": reference, "amount": amount, "currency": currency},
        )
    except UpstreamPermanent as exc:
        if exc.status_code == 402:
            raise PaymentDeclined(str(exc), status_code=402) from exc
        raise
    try:
        capture_id = response.json()["id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UpstreamPermanent("payment provider capture: unexpected answer", status_code=200) from exc
    if not isinstance(capture_id, str) or not capture_id:
        raise UpstreamPermanent("payment provider capture: unexpected answer", status_code=200)
    return CaptureResult(capture_id[:100], response.headers.get("Idempotent-Replayed") == "true")
