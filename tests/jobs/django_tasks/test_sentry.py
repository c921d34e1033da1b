"""A failing django task reports to Sentry with its task context, on a worker of its own
(the `isolated` fixture stops the shared stack)."""

import pytest

from jobs.django_tasks.backend import RUNNER_TASK_NAME
from tests.harness import wait_until
from tests.jobs.django_tasks.helpers import FAILED, enqueue, wait_result
from tests.probe.django_tasks import explode
from tests.sentry_ingest import SentryIngest

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_failing_django_task_reports_to_sentry_with_its_task_context(isolated):
    ingest = SentryIngest()
    try:
        # given a worker reporting to Sentry (a local ingest server)
        isolated.base_env.update(SENTRY_DSN=ingest.dsn)
        isolated.relay()
        isolated.worker("sentry")
        # when a django task fails for good
        result = wait_result(enqueue(explode, "boom"))
        [event] = wait_until(lambda: ingest.events(), timeout=30, message="the Sentry event")
    finally:
        ingest.close()
    # then the event names the generic task, this attempt and the django task's path
    assert result.status == FAILED
    assert event["tags"]["task"] == RUNNER_TASK_NAME
    assert event["tags"]["task_id"] == result.id
    assert str(event["tags"]["attempt"]) == "1"
    assert event["tags"]["django_task"] == "tests.probe.django_tasks.explode"
    assert event["exception"]["values"][-1]["type"] == "ValueError"
