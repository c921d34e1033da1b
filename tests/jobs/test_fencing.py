"""Fenced ownership (jobs/execution.py): a run that was taken over writes nothing.

Each test makes a run, takes it over the way the reaper and a redelivery do (mark it lost,
begin again: epoch + 1), then lets the superseded run try every kind of write it makes."""

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from jobs import execution, outbox
from jobs.dead_letters import dead_letter_record
from jobs.errors import Reschedule
from jobs.execution import Claim, Fence, Superseded, fenced, meta_from_headers
from jobs.models import DeadLetter, OutboxMessage, TaskRun
from jobs.scheduling import ledger
from notifications.models import EmailDelivery
from notifications.services import _claim, email_send

pytestmark = pytest.mark.django_db(transaction=True)


def run_of(task_id: str | None = None) -> tuple[execution.TaskMeta, Fence]:
    meta = meta_from_headers(task_id or str(uuid.uuid4()), "probe.record", "default", {})
    begun = execution.begin(meta, max_deliveries=3)
    assert begun.claim is Claim.RUN
    assert begun.fence is not None
    return meta, begun.fence


def take_over(meta: execution.TaskMeta) -> Fence:
    """What the reaper and the re-published message do to a stalled run."""
    TaskRun.objects.filter(task_id=meta.task_id).update(state=TaskRun.State.LOST)
    begun = execution.begin(meta, max_deliveries=3)
    assert begun.claim is Claim.RUN
    assert begun.fence is not None
    return begun.fence


def test_a_takeover_increments_the_epoch_and_only_the_new_run_finishes():
    meta, old = run_of()
    new = take_over(meta)
    assert (old.epoch, new.epoch) == (1, 2)
    assert execution.finish(old, TaskRun.State.SUCCEEDED) is False  # refused, logged
    assert TaskRun.objects.get(task_id=meta.task_id).state == TaskRun.State.RUNNING
    assert execution.finish(new, TaskRun.State.SUCCEEDED) is True
    assert TaskRun.objects.get(task_id=meta.task_id).state == TaskRun.State.SUCCEEDED


def test_a_live_run_is_not_taken_over_by_a_redelivery():
    meta, _ = run_of()
    again = execution.begin(meta, max_deliveries=3)
    assert (again.claim, again.fence) == (Claim.RUNNING_ELSEWHERE, None)
    execution.finish(_, TaskRun.State.SUCCEEDED)
    assert execution.begin(meta, max_deliveries=3).claim is Claim.DUPLICATE


def test_a_superseded_runs_enqueue_is_refused_with_its_transaction():
    meta, old = run_of()
    take_over(meta)
    with fenced(old), pytest.raises(Superseded), transaction.atomic():
        outbox.enqueue("probe.record", kwargs={"key": "from-the-old-run"})
    assert not OutboxMessage.objects.filter(kwargs__key="from-the-old-run").exists()


def test_the_current_runs_enqueue_is_written():
    meta, _ = run_of()
    fence = take_over(meta)
    with fenced(fence), transaction.atomic():
        outbox.enqueue("probe.record", kwargs={"key": "from-the-new-run"})
    assert OutboxMessage.objects.filter(kwargs__key="from-the-new-run").exists()


def test_a_superseded_runs_dead_letter_is_not_written():
    meta, old = run_of()
    take_over(meta)
    with fenced(old), pytest.raises(Superseded):
        dead_letter_record(
            meta=meta, exc=RuntimeError("late"), reason="permanent", args=[], kwargs={}, fence=old
        )
    assert not DeadLetter.objects.filter(task_id=meta.task_id).exists()
    assert TaskRun.objects.get(task_id=meta.task_id).state == TaskRun.State.RUNNING


def test_a_superseded_run_claims_no_email(user):
    meta, old = run_of()
    take_over(meta)
    with fenced(old), pytest.raises(Superseded):
        email_send(
            template="order_confirmation", ledger_key="fence:1", recipient=user, context={}, task_id="x"
        )
    assert not EmailDelivery.objects.filter(ledger_key="fence:1").exists()


def test_an_email_claimed_by_a_stalled_run_waits_for_its_lease(user):
    # given the old run claimed the email and stalled before sending (a row left `sending`)
    meta, old = run_of()
    EmailDelivery.objects.create(
        template="order_confirmation",
        ledger_key="fence:2",
        recipient=user,
        message_id="<fence-2@test>",
        status=EmailDelivery.Status.SENDING,
        claimed_at=timezone.now(),
        claimed_by=old.token,
    )
    new = take_over(meta)
    assert not new.predecessor_gone  # it may wake up mid-send: its claim is not taken at once
    # when the new run tries to send, it waits for the claim's lease instead of sending twice
    with fenced(new), pytest.raises(Reschedule):
        email_send(
            template="order_confirmation", ledger_key="fence:2", recipient=user, context={}, task_id="x"
        )


def test_a_claim_of_a_predecessor_known_dead_is_taken_at_once(user):
    # given a run that claimed the email, then its process died (same host: known dead)
    meta, old = run_of()
    EmailDelivery.objects.create(
        template="order_confirmation",
        ledger_key="fence:3",
        recipient=user,
        message_id="<fence-3@test>",
        status=EmailDelivery.Status.SENDING,
        claimed_at=timezone.now(),
        claimed_by=old.token,
    )
    take_over(meta)
    successor = Fence(meta.task_id, old.epoch + 1, predecessor_gone=True)
    assert successor.predecessor_token == old.token
    # then its successor takes the claim over without waiting for the lease
    with fenced(successor):
        delivery = _claim(template="order_confirmation", ledger_key="fence:3", recipient=user, task_id="x")
    assert delivery is not None
    assert EmailDelivery.objects.get(ledger_key="fence:3").claimed_by == successor.token


def test_a_superseded_run_claims_no_slot():
    meta, old = run_of()
    take_over(meta)
    start = timezone.now().replace(minute=0, second=0, microsecond=0)
    with fenced(old), pytest.raises(Superseded):
        ledger.claim(schedule="fenced", slot_start=start, task_id=meta.task_id)


def test_a_redelivery_of_a_running_chain_never_runs_its_slot_twice():
    start = timezone.now().replace(minute=0, second=0, microsecond=0)
    first = str(uuid.uuid4())
    assert not ledger.claim(schedule="chain", slot_start=start, task_id=first).skipped
    # another task id of the same chain while the slot is running: refused
    again = ledger.claim(schedule="chain", slot_start=start, task_id=str(uuid.uuid4()), root_id=first)
    assert again.skipped
    # the same task id (a takeover its fence arbitrated) may re-enter
    assert not ledger.claim(schedule="chain", slot_start=start, task_id=first).skipped


def test_heartbeats_refresh_only_the_runs_the_worker_holds():
    meta, _ = run_of()
    old_beat = timezone.now() - timedelta(minutes=5)
    TaskRun.objects.filter(task_id=meta.task_id).update(heartbeat_at=old_beat)
    run = TaskRun.objects.get(task_id=meta.task_id)
    # a worker whose child no longer holds the run (taken over elsewhere) changes nothing
    assert execution.heartbeat([(meta.task_id, "other@host:1")]) == 0
    assert TaskRun.objects.get(task_id=meta.task_id).heartbeat_at == old_beat
    assert execution.heartbeat([(meta.task_id, run.worker)]) == 1
    assert TaskRun.objects.get(task_id=meta.task_id).heartbeat_at > old_beat


def test_an_enqueue_inside_a_rolled_back_savepoint_of_a_batch_is_not_written():
    with transaction.atomic(), outbox.batch():
        outbox.enqueue("probe.record", kwargs={"key": "kept"})
        try:
            with transaction.atomic():
                outbox.enqueue("probe.record", kwargs={"key": "rolled-back"})
                raise RuntimeError("the savepoint rolls back")
        except RuntimeError:
            pass
    keys = set(OutboxMessage.objects.values_list("kwargs__key", flat=True))
    assert keys == {"kept"}


ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true)"


def test_claim_and_finish_commit_asynchronously_on_their_own_and_durably_inside_a_transaction():
    """docs/failures.md: TaskRun bookkeeping skips the WAL-flush wait for its own commit only;
    inside a caller's transaction (a retry's outbox row) it commits with it, durably."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as alone:
        _, fence = run_of()
        assert execution.finish(fence, TaskRun.State.SUCCEEDED)
    assert [ASYNC_COMMIT in q["sql"] for q in alone.captured_queries] == [True, True]
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")  # transaction-local: the session is untouched
        assert cursor.fetchone()[0] == "on"

    with CaptureQueriesContext(connection) as inside, transaction.atomic():
        _, fence = run_of()
        assert execution.finish(fence, TaskRun.State.RETRIED)
    assert not any(ASYNC_COMMIT in q["sql"] for q in inside.captured_queries)
