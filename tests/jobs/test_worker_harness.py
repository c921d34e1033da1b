"""The harness itself: a real worker process consumes from the real Redis broker."""

import uuid

import pytest

from config.celery_app import app as celery_app
from tests.harness import redis_client, wait_until


@pytest.mark.django_db(transaction=True)
def test_a_task_sent_to_the_broker_runs_on_a_real_worker(live):
    # given a token nobody has written yet
    token = uuid.uuid4().hex
    client = redis_client()
    assert client.get(f"taskyard:pong:{token}") is None
    # when the ping task is sent straight to the broker (the harness check; product code uses the outbox)
    celery_app.send_task("jobs.ping", kwargs={"token": token}, queue="default")
    # then the worker runs it and its effect appears
    assert wait_until(lambda: client.get(f"taskyard:pong:{token}"), timeout=20, message="pong") == b"pong"
