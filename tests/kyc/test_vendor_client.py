"""The vendor client (kyc/vendor.py) against the running fake: every answer classified once."""

import io

import pytest

from core.http import UpstreamPermanent, UpstreamRetryable
from kyc import vendor as client
from tests.harness import free_port, wait_until
from tests.kyc.conftest import pdf_bytes


def submit(key: str = "sub-1", data: bytes | None = None) -> client.VendorResult:
    document = client.Upload(io.BytesIO(data or pdf_bytes()), "application/pdf", "document-1.pdf")
    return client.submit_check(idempotency_key=key, document_type="passport", documents=[document])


def test_submit_then_poll_until_the_decision(vendor):
    vendor.control(decision_delay=0.3)
    first = submit()
    assert first.status == "pending"
    assert first.status_code == 201
    assert first.check_id.startswith("chk_")
    # the decision is due 0.3 s later
    result = wait_until(lambda: (r := client.get_check(first.check_id)).is_final and r, timeout=5)
    assert (result.status, result.reason_codes) == ("approved", ["clear"])


def test_the_same_idempotency_key_is_the_same_check(vendor):
    first = submit("sub-2")
    again = submit("sub-2")
    assert again.check_id == first.check_id
    assert again.status_code == 200
    stats = vendor.stats()
    assert (stats["submits"], stats["checks"]) == (2, 1)
    # the same key with other documents is refused, permanently
    with pytest.raises(UpstreamPermanent, match="422") as refused:
        submit("sub-2", pdf_bytes(marker="something else"))
    assert refused.value.status_code == 422


def test_markers_and_the_default_decide(vendor):
    vendor.control(decision_delay=0)
    assert submit("a", pdf_bytes(marker="KYC-FAKE:reject")).status == "rejected"
    review = submit("b", pdf_bytes(marker="KYC-FAKE:manual_review"))
    assert review.status == "manual_review"
    assert review.reason_codes == ["image_quality_low", "additional_document_required"]
    vendor.control(decision="reject", reason_codes=["document_tampered"])
    rejected = submit("c")
    assert (rejected.status, rejected.reason_codes) == ("rejected", ["document_tampered"])


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retryable_with_the_backoff(vendor, status):
    vendor.control(fail_submits=1, fail_with=status)
    with pytest.raises(UpstreamRetryable) as failed:
        submit()
    assert failed.value.status_code == status
    assert failed.value.retry_after is None  # no Retry-After: the task's backoff decides


def test_429_is_retryable_after_the_vendors_retry_after(vendor):
    vendor.control(mode="429", retry_after=7)
    with pytest.raises(UpstreamRetryable) as limited:
        client.get_check("chk_whatever")
    assert limited.value.status_code == 429
    assert limited.value.retry_after == 7


def test_a_503_with_retry_after_is_honoured_too(vendor):
    vendor.control(fail_submits=1, fail_with=503, retry_after_statuses=[429, 503], retry_after=4)
    with pytest.raises(UpstreamRetryable) as failed:
        submit()
    assert (failed.value.status_code, failed.value.retry_after) == (503, 4)


@pytest.mark.parametrize("status", [400, 422])
def test_4xx_is_permanent(vendor, status):
    vendor.control(mode="reject", reject_status=status)
    with pytest.raises(UpstreamPermanent, match="invalid_document") as rejected:
        submit()
    assert rejected.value.status_code == status


def test_an_unknown_check_is_permanent(vendor):
    with pytest.raises(UpstreamPermanent, match="404"):
        client.get_check("chk_nobody_knows")


def test_a_read_timeout_is_retryable_and_the_check_exists_anyway(vendor, settings):
    # given a vendor that takes the check but answers after our read timeout
    settings.KYC_VENDOR_READ_TIMEOUT = 0.5
    vendor.control(fail_submits=1, fail_with="timeout", timeout_seconds=1.5)
    with pytest.raises(UpstreamRetryable, match="timed out"):
        submit("sub-3")
    # when the retry sends the same key, the vendor answers with the check it already has
    again = submit("sub-3")
    assert again.status_code == 200
    assert vendor.stats()["checks"] == 1


def test_nothing_listening_is_retryable(vendor, settings):
    settings.KYC_VENDOR_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamRetryable, match="connection failed"):
        submit()


def test_the_fake_measures_the_busiest_window(vendor):
    for key in ("w1", "w2", "w3"):
        submit(key)
    stats = vendor.stats(window=60)
    assert stats["max_in_window"] == 3
    assert sum(stats["per_minute"].values()) == 3
    assert len(stats["call_times"]) == 3
