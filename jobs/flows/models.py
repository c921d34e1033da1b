"""Flows as rows: a Flow and its FlowSteps (imported by jobs/models.py, so they are jobs' models).

Flow      one run of a set of steps with dependencies; nested flows hang off a step of
          their parent (`parent_step`). Its state is decided by its steps' outcomes.
FlowStep  one ordinary task (or a nested flow) of a flow: `waiting_on` counts the
          dependencies not yet settled, `downstream` names the steps waiting on this one.

docs/flows.md describes the states and what moves a flow from one to the next.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Now


class Flow(models.Model):
    class State(models.TextChoices):
        WAITING = "waiting"  # a nested flow whose parent step is not released yet
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    kind = models.CharField(max_length=50)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="flows"
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING)
    # A nested flow is the body of one step of its parent flow.
    parent_step = models.OneToOneField(
        "jobs.FlowStep", null=True, blank=True, on_delete=models.CASCADE, related_name="subflow"
    )
    # One active flow per key (e.g. one fulfilment per order); a cancelled flow frees it.
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)
    # Steps nothing waits on, not yet settled: the flow is done when this reaches 0.
    sinks_left = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)  # steps failed under on_failure=continue
    failed_step = models.ForeignKey(
        "jobs.FlowStep", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )  # the step whose failure failed the flow (on_failure=fail)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["dedupe_key"], condition=~models.Q(state="cancelled"), name="flow_dedupe_active"
            )
        ]
        indexes = [models.Index(fields=["owner", "-created_at"], name="flow_owner_created")]
        permissions = [("act_on_flow", "Can cancel flows and jobs and retry failed flow steps")]

    def __str__(self) -> str:
        return f"{self.kind} flow {self.id} ({self.state})"


class FlowStep(models.Model):
    class State(models.TextChoices):
        WAITING = "waiting"  # dependencies not settled yet (or its flow not started)
        QUEUED = "queued"  # its outbox row is written: published, or waiting for a retry
        RUNNING = "running"  # a worker started it (a nested step: its flow runs)
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # dead-lettered (a nested step: its flow failed)
        CANCELLED = "cancelled"  # never ran, or stopped, because its flow was cancelled or failed

    class OnFailure(models.TextChoices):
        FAIL = "fail"  # the flow fails at once: steps not started are cancelled
        IGNORE = "ignore"  # as good as a success: the flow goes on and may succeed
        CONTINUE = "continue"  # the flow goes on, then ends failed

    flow = models.ForeignKey(Flow, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=100)
    task_name = models.CharField(max_length=200, blank=True, default="")  # empty: a nested flow
    queue = models.CharField(max_length=50, blank=True, default="")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=list, blank=True)  # names of the steps this one waits for
    downstream = models.JSONField(default=list, blank=True)  # names of the steps waiting for this one
    waiting_on = models.PositiveIntegerField(default=0)  # of `after`, not settled yet
    on_failure = models.CharField(max_length=10, choices=OnFailure.choices, default=OnFailure.FAIL)
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING)
    attempts = models.PositiveIntegerField(default=0)  # the attempt number of the latest run
    # The outbox row that released the step, i.e. the root id of its retry chain (TaskRun and
    # DeadLetter rows carry it). Only a message of this chain may run the step; a replay starts
    # a new chain (NULL until it starts).
    root_id = models.UUIDField(null=True, blank=True)
    error_code = models.CharField(max_length=100, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["flow", "name"], name="flow_step_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.state})"
