"""How a failed call to the outside world is classified, once, where the call happens.

Clients (HTTP in core/http.py, SMTP in notifications/) raise one of these two; the task
infrastructure's retry policy (jobs/policy.py) reads them. They live here, not in jobs/,
because the clients that raise them know nothing about tasks.
"""


class RetryableError(Exception):
    """A transient failure: try again later. `retry_after` (seconds) overrides the backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """Trying again cannot help (a 4xx, a validation error): dead-letter at once."""
