"""Idempotency-Key on a creating POST: replay, mismatch, failures not stored, races, expiry."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.models import IdempotencyKey
from jobs.models import Job, OutboxMessage
from tests.conftest import client_for

URL = "/api/probe/create"


@pytest.mark.django_db
def test_same_key_same_body_replays_the_first_response(api):
    first = api.post(URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post(URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again["Location"] == first["Location"]
    assert again["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    # nothing was created or enqueued twice
    assert Job.objects.count() == 1
    assert OutboxMessage.objects.count() == 1


@pytest.mark.django_db
def test_same_key_different_body_is_422(api):
    api.post(URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    response = api.post(URL, {"kind": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "idempotency-key-reused"
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_keys_are_per_user(api, other_user):
    mine = api.post(URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="shared")
    theirs = client_for(other_user).post(
        URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="shared"
    )
    assert mine.json()["id"] != theirs.json()["id"]
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_a_failed_request_stores_nothing_and_the_key_can_be_reused(api):
    bad = api.post(URL, {}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert bad.status_code == 400
    assert not IdempotencyKey.objects.exists()
    good = api.post(URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2")
    assert good.status_code == 201


@pytest.mark.django_db
def test_expired_key_starts_over(api):
    first = api.post(URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="k-3")
    IdempotencyKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    second = api.post(URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="k-3")
    assert second.status_code == 201
    assert second.json()["id"] != first.json()["id"]


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_invalid_keys_are_400(api, key):
    response = api.post(URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency-key-invalid"


@pytest.mark.django_db
def test_without_a_key_each_post_creates(api):
    api.post(URL, {"kind": "export"}, format="json")
    api.post(URL, {"kind": "export"}, format="json")
    assert Job.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_requests_create_one_resource(user):
    # given two clients sending the same key at the same moment, the first holding its
    # transaction open for a second
    responses = {}
    start = threading.Barrier(2)

    def send(name: str, delay: str) -> None:
        try:
            start.wait()
            responses[name] = client_for(user).post(
                URL, {"kind": "export"}, format="json", HTTP_IDEMPOTENCY_KEY="race", HTTP_X_PROBE_DELAY=delay
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(n, d)) for n, d in (("slow", "1.0"), ("fast", "0"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # then one resource exists, and both got the same answer
    assert {r.status_code for r in responses.values()} == {201}
    assert responses["slow"].json() == responses["fast"].json()
    assert Job.objects.count() == 1
    assert OutboxMessage.objects.count() == 1
    assert sum(r.has_header("Idempotent-Replayed") for r in responses.values()) == 1
