"""Sentry events from a real worker and a real web process reach a local ingest server
without PII: no emails, tokens, task arguments, request bodies or auth headers."""

import json
import sys
import uuid

import pytest
import requests
from rest_framework.authtoken.models import Token

from config.celery_app import app as celery_app
from tests.harness import free_port, wait_until
from tests.sentry_ingest import SentryIngest

pytestmark = pytest.mark.django_db(transaction=True)

EMAIL = "alice.private@example.com"
SECRET = "tok3n-" + "x" * 24


@pytest.fixture
def ingest():
    server = SentryIngest()
    yield server
    server.close()


def test_failing_task_event_has_task_context_and_no_pii(isolated, ingest):
    isolated.base_env.update(SENTRY_DSN=ingest.dsn)
    isolated.worker("sentry")
    task_id = str(uuid.uuid4())
    celery_app.send_task(
        "probe.leaky", kwargs={"email": EMAIL, "token": SECRET}, task_id=task_id, queue="default"
    )
    [event] = wait_until(lambda: ingest.events(), timeout=30, message="the Sentry event")
    # the event says which task failed, and how
    assert event["tags"]["task"] == "probe.leaky"
    assert event["tags"]["task_id"] == task_id
    assert event["tags"]["queue"] == "default"
    assert str(event["tags"]["attempt"]) == "1"
    assert event["exception"]["values"][-1]["type"] == "PermanentError"
    # and nothing personal left the worker: not in the event, not anywhere in the envelopes
    raw = b"".join(ingest.envelopes)
    assert EMAIL.encode() not in raw
    assert SECRET.encode() not in raw
    job = event.get("extra", {}).get("celery-job", {})
    assert "args" not in job
    assert "kwargs" not in job


def test_web_error_event_has_no_auth_header_body_or_email(isolated, ingest, user):
    token = Token.objects.create(user=user)
    port = free_port()
    isolated.spawn(
        "web",
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        SENTRY_DSN=ingest.dsn,
    )

    def post():
        try:
            return [
                requests.post(
                    f"http://127.0.0.1:{port}/api/probe/boom",
                    json={"email": EMAIL, "note": "private"},
                    headers={"Authorization": f"Token {token.key}", "Cookie": f"sessionid={SECRET}"},
                    timeout=5,
                )
            ]
        except requests.ConnectionError:
            return None

    [response] = wait_until(post, timeout=30, message="gunicorn to answer")
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    assert EMAIL not in response.text  # the client gets no details either
    [event] = wait_until(lambda: ingest.events(), timeout=30, message="the Sentry event")
    raw = b"".join(ingest.envelopes)
    for secret in (EMAIL, SECRET, token.key, "private"):
        assert secret.encode() not in raw, secret
    headers = {k.lower() for k in event["request"].get("headers", {})}
    assert not headers & {"authorization", "cookie"}
    assert "data" not in event["request"]
    assert event["tags"]["request_id"]
    assert json.dumps(event).count("<email>") >= 1  # the message was kept, redacted
