"""CSV export of a user's orders: a Job the client polls (202 + /api/jobs/<id>).

The task walks the orders in id order, 500 at a time (keyset pagination: no OFFSET,
no full list in memory), writes each chunk to a temporary file and reports progress
after every chunk. Re-running a job rewrites the same file name, so a duplicate
delivery or a replay produces the same result.
"""

import csv
import tempfile

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.tasks import task

from jobs.django_tasks.specs import policy
from jobs.models import Job
from jobs.policy import RetryPolicy
from jobs.queues import Queue
from jobs.services import job_create, job_progress, job_succeed
from orders.models import Order

EXPORT_KIND = "orders-export"
COLUMNS = ["number", "created_at", "status", "currency", "total", "paid_at", "cancelled_at", "cancel_reason"]


# Storage and database errors are retried; a missing job is permanent (ObjectDoesNotExist).
EXPORT_POLICY = RetryPolicy(
    max_attempts=5, backoff_base=5.0, backoff_cap=300.0, notes="database/storage errors"
)


def order_export_start(*, user: User) -> Job:
    with transaction.atomic():
        job = job_create(owner=user, kind=EXPORT_KIND)
        export_orders.enqueue(job_id=str(job.id))  # a django.tasks Task: an outbox row, in this transaction
    return job


def order_export_run(*, job_id: str) -> str:
    job = Job.objects.get(pk=job_id, kind=EXPORT_KIND)
    orders = Order.objects.filter(owner_id=job.owner_id)
    total = orders.count()
    chunk = settings.ORDERS_EXPORT_CHUNK_SIZE
    written, last_id = 0, 0
    with tempfile.TemporaryFile(mode="w+", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(COLUMNS)
        while True:
            rows = list(
                orders.filter(id__gt=last_id)
                .order_by("id")
                .values_list(
                    "id",
                    "created_at",
                    "status",
                    "currency",
                    "total",
                    "paid_at",
                    "cancelled_at",
                    "cancel_reason",
                )[:chunk]
            )
            if not rows:
                break
            for pk, created, status, currency, amount, paid, cancelled, reason in rows:
                out.writerow(
                    [
                        f"TY-{pk:08d}",
                        created.isoformat(),
                        status,
                        currency,
                        amount,
                        paid.isoformat() if paid else "",
                        cancelled.isoformat() if cancelled else "",
                        reason,
                    ]
                )
            written += len(rows)
            last_id = rows[-1][0]
            job_progress(
                job_id=job_id, progress=written * 100 // max(total, 1), message=f"{written} of {total} orders"
            )
        handle.seek(0)
        name = f"exports/orders-{job_id}.csv"
        if default_storage.exists(name):
            default_storage.delete(name)  # a re-run replaces its own file, keeping the name
        stored = default_storage.save(name, File(handle))
    job_succeed(job_id=job_id, result_file=stored, result={"rows": written})
    return stored


# Django's task API (jobs/django_tasks/): `export_orders.enqueue(job_id=...)` above writes an
# outbox row in the caller's transaction; the worker runs it as jobs.run_django_task.
@policy(EXPORT_POLICY, soft_time_limit=14 * 60, time_limit=15 * 60, job_kwarg="job_id")
@task(queue_name=Queue.DOCUMENTS)
def export_orders(job_id: str) -> str:
    return order_export_run(job_id=job_id)
