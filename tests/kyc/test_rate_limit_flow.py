"""The vendor's rate limit holds across worker processes: a Redis token bucket, not Celery's rate_limit.

Small numbers so it runs in seconds: at most 5 calls in any 4-second window (burst 1, then one
token every second), 20 submissions, two worker processes with two children each.
"""

from pathlib import Path

import pytest

from jobs.models import DeadLetter, TaskRun
from kyc.checks import VENDOR_BUCKET_KEY
from kyc.models import Submission
from tests.conftest import client_for, start_sink
from tests.harness import redis_client, wait_until
from tests.kyc.conftest import upload

pytestmark = pytest.mark.django_db(transaction=True)

CALLS, WINDOW, BURST = 5, 4.0, 1
SUBMISSIONS = 20


def children(proc) -> set[int]:
    """The pool children of a worker's main process."""
    path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    return {int(pid) for pid in path.read_text().split()} if path.exists() else set()


def test_twenty_checks_on_two_workers_never_exceed_the_vendor_limit(isolated, vendor, make_user, tmp_path):
    # given a vendor that decides at once (one call per submission) and a bucket nobody has used
    vendor.control(decision_delay=0)
    redis_client().delete(VENDOR_BUCKET_KEY)
    sink = start_sink(isolated, tmp_path / "sink")
    isolated.base_env.update(
        KYC_VENDOR_URL=vendor.url,
        KYC_VENDOR_RATE_PER_MINUTE=str(CALLS),
        KYC_VENDOR_RATE_WINDOW_SECONDS=str(WINDOW),
        KYC_VENDOR_RATE_BURST=str(BURST),
        EMAIL_PORT=str(sink.smtp_port),
    )
    workers = [isolated.worker(name, queues="kyc,emails,default") for name in ("kyc-a", "kyc-b")]
    isolated.relay()
    # when 20 users each upload a document (20 users: one open submission per user)
    ids = []
    for _ in range(SUBMISSIONS):
        response = upload(client_for(make_user()))
        assert response.status_code == 202, response.json()
        ids.append(response.json()["id"])
    # then all 20 are decided, as fast as the limit allows (about (20 - 1) / 1 per s = 19 s)
    wait_until(
        lambda: Submission.objects.filter(pk__in=ids, status="approved").count() == SUBMISSIONS,
        timeout=90,
        interval=0.5,
        message="all 20 submissions to be approved",
    )
    wait_until(lambda: len(sink.messages()) == SUBMISSIONS, timeout=30, message="20 result emails")
    stats = vendor.stats(window=WINDOW)
    print(  # the figures for the report (pytest -s)
        f"\nvendor calls {stats['calls']}, busiest {WINDOW:g}s window {stats['max_in_window']}, "
        f"per minute {stats['per_minute']}, span {stats['call_times'][-1] - stats['call_times'][0]:.1f}s, "
        f"reschedules {TaskRun.objects.filter(task_name='kyc.run_check', state='rescheduled').count()}"
    )
    # never more than 5 calls in any 4-second window, as the vendor counted them
    assert stats["max_in_window"] <= CALLS
    # one call per submission: the limit cost time, never an extra call or a retry
    assert stats["submits"] == SUBMISSIONS
    assert stats["checks"] == SUBMISSIONS
    runs = TaskRun.objects.filter(task_name="kyc.run_check")
    assert set(runs.values_list("attempt", flat=True)) == {1}  # rescheduled, not retried
    assert runs.filter(state="rescheduled").exists()
    assert not DeadLetter.objects.exists()
    # and the limit was a real constraint: the calls were spread over the budget's time
    span = stats["call_times"][-1] - stats["call_times"][0]
    assert span >= 0.9 * (SUBMISSIONS - BURST) * WINDOW / (CALLS - BURST)
    # both worker processes made vendor calls: the budget is shared, not per process
    pids = {
        int(worker.split(":")[-1])
        for worker in runs.filter(state="succeeded").values_list("worker", flat=True)
    }
    assert all(pids & children(proc) for proc in workers), (pids, [children(p) for p in workers])
