"""The payment client against the real fake: one capture per Idempotency-Key, failures classified."""

import pytest

from core.http import UpstreamPermanent, UpstreamRetryable
from fulfilment import payments
from fulfilment.errors import PaymentDeclined
from jobs.flows.errors import error_code


def capture(key: str = "capture:order:1", reference: str = "TY-00000001", amount: str = "19.98"):
    return payments.capture(idempotency_key=key, reference=reference, amount=amount, currency="EUR")


def test_the_same_key_returns_the_same_capture_never_a_second_charge(provider):
    first = capture()
    again = capture()
    assert again.capture_id == first.capture_id
    assert (first.replayed, again.replayed) == (False, True)
    assert provider.captures_of("TY-00000001") == 1
    with pytest.raises(UpstreamPermanent, match="422"):
        capture(amount="20.00")  # the same key for another charge is refused


def test_a_decline_is_permanent_and_named(provider):
    provider.control(decline=["TY-00000002"])
    with pytest.raises(PaymentDeclined) as declined:
        capture(key="capture:order:2", reference="TY-00000002")
    assert error_code(declined.value) == "payment-declined"
    assert provider.captures_of("TY-00000002") == 0


def test_an_outage_is_retryable_with_the_providers_retry_after(provider):
    provider.control(mode="down", retry_after=7)
    with pytest.raises(UpstreamRetryable) as down:
        capture()
    assert down.value.retry_after == 7
    assert provider.stats()["captures"] == 0
