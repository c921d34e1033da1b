"""Shared task infrastructure, as rows you can query.

OutboxMessage  the enqueue: written in the caller's transaction, published by the relay.
               Its id is the Celery task id.
TaskRun        one row per task id a worker started: deliveries (poison cap), heartbeat
               (stuck-attempt reaper), terminal state (duplicate deliveries are no-ops).
DeadLetter     a task whose retries ran out or that failed permanently; reviewed and
               replayed from the admin.
Job            user-facing status of long work (202 + /api/jobs/<id>).
ScheduleSlot   the beat slot ledger: one row per (schedule, slot start in UTC), claimed
               before a scheduled run does any work (jobs/scheduling/ledger.py).
Flow, FlowStep steps with dependencies, tracked here (jobs/flows/models.py, docs/flows.md).
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from jobs.flows.models import Flow, FlowStep

__all__ = ["DeadLetter", "Flow", "FlowStep", "Job", "OutboxMessage", "ScheduleSlot", "TaskRun"]


class OutboxMessage(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)  # = Celery task id
    task_name = models.CharField(max_length=200)
    queue = models.CharField(max_length=50)
    args = models.JSONField(default=list, db_default=[])
    kwargs = models.JSONField(default=dict, db_default={})
    # request_id, attempt, root_id, job_id, first_failed_at, replay_of
    headers = models.JSONField(default=dict, db_default={})
    priority = models.PositiveSmallIntegerField(null=True, blank=True)
    not_before = models.DateTimeField(db_default=Now())  # delayed work lives here, not in broker ETAs
    created_at = models.DateTimeField(db_default=Now())
    sent_at = models.DateTimeField(null=True, blank=True)
    # A relay leases rows instead of holding row locks across the broker call; its marks
    # (sent, failed) apply only while the lease is the one it took (claim_token).
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    publish_attempts = models.PositiveIntegerField(default=0, db_default=0)
    last_error = models.TextField(blank=True, default="", db_default="")
    # Same logical work enqueued twice (BullMQ's jobId): the second INSERT does nothing.
    dedupe_key = models.CharField(max_length=200, null=True, blank=True, unique=True)

    class Meta:
        indexes = [
            # The relay's claim query only ever looks at unsent rows, by due time.
            models.Index(
                fields=["not_before"], name="outbox_unsent_due", condition=models.Q(sent_at__isnull=True)
            ),
            models.Index(
                fields=["sent_at"], name="outbox_sent_at", condition=models.Q(sent_at__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.id}]"


class TaskRun(models.Model):
    class State(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        RETRIED = "retried"  # failed; a new task id carries the next attempt
        RESCHEDULED = "rescheduled"  # asked to run later (rate limit); a new task id carries it
        DEAD = "dead"  # dead-lettered
        LOST = "lost"  # its worker died; the reaper re-published it
        CANCELLED = "cancelled"  # its job or flow was cancelled: not run, or stopped (jobs/cancellation.py)

    TERMINAL = (State.SUCCEEDED, State.RETRIED, State.RESCHEDULED, State.DEAD, State.CANCELLED)

    task_id = models.UUIDField(primary_key=True)
    task_name = models.CharField(max_length=200)
    queue = models.CharField(max_length=50, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices)
    deliveries = models.PositiveIntegerField(default=1)  # times a worker started this task id
    # The fencing epoch: 1 for the first run, +1 for every takeover (jobs/execution.py). A run
    # writes (finish, retries, dead letters, ledger claims, outbox rows) only while it holds it.
    epoch = models.PositiveIntegerField(default=1, db_default=1)
    attempt = models.PositiveIntegerField(default=1)  # 1 + retries before this task id
    root_id = models.UUIDField(null=True, blank=True)  # first task id of a retry chain
    worker = models.CharField(max_length=200, blank=True, default="")  # node:pid of the pool child
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # django.tasks runs only (jobs/django_tasks/backend.py): what the attempt produced, read by
    # get_result(): {"return_value": <JSON>} or {"exception_class": "...", "traceback": "..."}.
    result = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["heartbeat_at"], name="taskrun_running_hb", condition=models.Q(state="running")
            ),
            models.Index(fields=["finished_at"], name="taskrun_finished"),
            # A retry chain's runs, for get_result() of django.tasks results.
            models.Index(fields=["root_id"], name="taskrun_root"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.task_id}] {self.state}"


class DeadLetter(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        REPLAYED = "replayed"
        RESOLVED = "resolved"
        DISCARDED = "discarded"

    task_id = models.UUIDField(
        unique=True
    )  # one dead letter per task id, even if the worker dies after writing it
    root_id = models.UUIDField(null=True, blank=True)
    task_name = models.CharField(max_length=200, db_index=True)
    queue = models.CharField(max_length=50)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    headers = models.JSONField(default=dict)
    exception_class = models.CharField(max_length=300)
    message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField()
    reason = models.CharField(max_length=32)  # permanent | exhausted | poison | timeout
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    fingerprint = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN, db_index=True)
    acted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acted_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, default="")
    replay_task_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        permissions = [("act_on_deadletter", "Can replay, resolve and discard dead letters")]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.task_name} {self.exception_class} ({self.status})"


class Job(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        DEAD = "dead"
        CANCELLED = "cancelled"

    FINISHED = (State.SUCCEEDED, State.FAILED, State.DEAD, State.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=50)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)  # 0-100
    progress_message = models.CharField(max_length=200, blank=True, default="")
    result_file = models.CharField(max_length=300, blank=True, default="")  # storage name, private
    result = models.JSONField(default=dict, blank=True)
    # What the client sees when the job failed: a stable code and its message (JOB_FAILURES in
    # jobs/dead_letters.py), never exception text; the details are in the DeadLetter row.
    error_code = models.CharField(max_length=50, blank=True, default="", db_default="")
    error = models.TextField(blank=True, default="")
    task_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Stored, so it outlives worker restarts and messages already in the broker (jobs/cancellation.py).
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} job {self.id} ({self.state})"


class ScheduleSlot(models.Model):
    """One row per (schedule name, slot start in UTC): beat is a clock, this is the lock.

    A scheduled task claims its slot here before doing any work (jobs/scheduling/ledger.py). A second
    beat, a duplicate delivery or a manual re-run of a slot that is already claimed does
    nothing; it is counted in `skipped_count`. A slot without a row was missed
    (`manage.py backfill_schedule` lists and runs it).
    """

    class Status(models.TextChoices):
        CLAIMED = "claimed"  # reserved by backfill; its task is queued
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # the latest attempt failed: a retry follows, or a DeadLetter exists
        SKIPPED = "skipped"  # never run on purpose: a missed slot superseded by a newer one

    schedule = models.CharField(max_length=200)  # jobs.scheduling.definitions.Schedule.name
    slot_start = models.DateTimeField()  # UTC
    status = models.CharField(max_length=16, choices=Status.choices)
    task_id = models.UUIDField(null=True, blank=True)  # the task id running (or queued for) the slot
    root_id = models.UUIDField(null=True, blank=True)  # its retry chain: retries may re-enter the slot
    attempts = models.PositiveIntegerField(default=0, db_default=0)
    # Duplicates refused for this slot (a second beat, a redelivery, a manual re-run).
    skipped_count = models.PositiveIntegerField(default=0, db_default=0)
    last_skipped_at = models.DateTimeField(null=True, blank=True)
    last_skipped_task_id = models.UUIDField(null=True, blank=True)
    claimed_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)  # of the latest attempt
    finished_at = models.DateTimeField(null=True, blank=True)
    duration = models.DurationField(null=True, blank=True)  # of the latest attempt
    error = models.TextField(blank=True, default="", db_default="")
    note = models.CharField(max_length=300, blank=True, default="", db_default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["schedule", "slot_start"], name="schedule_slot_once"),
        ]
        indexes = [models.Index(fields=["schedule", "root_id"], name="scheduleslot_chain")]
        ordering = ["-slot_start"]

    def __str__(self) -> str:
        return f"{self.schedule} @ {self.slot_start:%Y-%m-%d %H:%M:%S}Z ({self.status})"
