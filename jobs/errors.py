"""Errors of the task infrastructure.

Task failures are classified once, where they happen: clients (SMTP, HTTP) raise
`core.errors.RetryableError` or `core.errors.PermanentError`, and each task's RetryPolicy
maps anything else. `Reschedule` is not a failure: the task asks to run later without
spending an attempt (a rate limiter said "not yet"). `TaskCancelled` is not one either:
the task's job or flow was cancelled (jobs/cancellation.py).
"""

from core.problems import ApplicationError


class PoisonMessageError(Exception):
    """The message was delivered too many times without finishing (it kills its worker)."""


class Reschedule(Exception):  # a control-flow signal, not an error
    """Run this task again in `delay` seconds without counting an attempt."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"rescheduled in {delay:.2f}s")
        self.delay = delay
        self.reason = reason


class TaskCancelled(Exception):  # a control-flow signal, not an error
    """The task's job or flow was cancelled: stop now. The base task records it as cancelled,
    never as a failure: no retry, no dead letter."""


class JobStateConflict(ApplicationError):
    status_code = 409
    code = "job-state-conflict"
    title = "The job is not in a state that allows this"


class EnqueueError(ValueError):
    """An enqueue that would break the outbox's rules (no transaction, bad payload, unknown task)."""
