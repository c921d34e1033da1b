"""Errors of the task infrastructure.

Task failures are classified once, where they happen: clients (SMTP, HTTP) raise
`RetryableError` or `PermanentError`, and each task's RetryPolicy maps anything
else. `Reschedule` is not a failure: the task asks to run later without spending
an attempt (a rate limiter said "not yet").
"""

from config.problems import ApplicationError


class TaskError(Exception):
    """Base of errors that tasks raise on purpose."""


class RetryableError(TaskError):
    """A transient failure: try again later. `retry_after` (seconds) overrides the backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(TaskError):
    """Trying again cannot help (a 4xx, a validation error): dead-letter at once."""


class PoisonMessageError(TaskError):
    """The message was delivered too many times without finishing (it kills its worker)."""


class Reschedule(Exception):  # a control-flow signal, not an error
    """Run this task again in `delay` seconds without counting an attempt."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"rescheduled in {delay:.2f}s")
        self.delay = delay
        self.reason = reason


class EnqueueError(ValueError):
    """An enqueue that would break the outbox's rules (no transaction, bad payload, unknown task)."""


# --- API errors (problem details) ---------------------------------------------------
class JobsError(ApplicationError):
    code = "jobs-error"


class IdempotencyKeyReused(JobsError):
    status_code = 422
    code = "idempotency-key-reused"
    title = "Idempotency-Key was already used with a different request"


class IdempotencyKeyInvalid(JobsError):
    status_code = 400
    code = "idempotency-key-invalid"
    title = "Idempotency-Key header is invalid"
