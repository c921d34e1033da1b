"""The order export: Django's task API end to end, reporting on its Job."""

import pytest
from django.core.files.storage import default_storage

from jobs.django_tasks.backend import RUNNER_TASK_NAME
from jobs.django_tasks.specs import spec_for
from jobs.models import Job, OutboxMessage
from orders.exports import EXPORT_POLICY, export_orders
from tests.jobs.django_tasks.helpers import wait_result

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_order_export_is_a_django_task_reporting_on_its_job(live, api):
    assert spec_for("orders.exports.export_orders").retry == EXPORT_POLICY
    assert (
        spec_for("orders.exports.export_orders").soft_time_limit,
        spec_for(export_orders.module_path).time_limit,
    ) == (
        14 * 60,
        15 * 60,
    )
    # given an export started through the API
    response = api.post("/api/orders/export")
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["job_id"])
    row = OutboxMessage.objects.get()
    assert (row.task_name, row.queue, row.headers["job_id"]) == (RUNNER_TASK_NAME, "documents", str(job.id))
    assert row.kwargs == {
        "task": "orders.exports.export_orders",
        "args": [],
        "kwargs": {"job_id": str(job.id)},
    }
    # when it has run
    result = wait_result(export_orders.get_result(str(row.id)))
    # then the job and the task result agree
    job.refresh_from_db()
    assert (job.state, job.result, job.task_id) == ("succeeded", {"rows": 0}, row.id)
    assert result.return_value == job.result_file
    assert default_storage.exists(job.result_file)
