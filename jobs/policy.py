"""Retry policy: what is retryable, what is permanent, how long to wait, how often.

Each task declares a RetryPolicy. Classification order:
  1. the task's `permanent_on` classes       -> permanent (dead letter at once)
  2. the task's `retry_on` classes            -> retry
  3. PermanentError / RetryableError markers  -> as named (raised by our SMTP and HTTP clients)
  4. transient infrastructure errors (below)  -> retry
  5. anything else                            -> permanent: an unexpected exception is a bug,
     and retrying a bug only delays the moment a person sees it in the dead-letter queue.

Backoff is exponential with full jitter, capped: delay = uniform(0, min(cap, base * 2**(n-1))).
"""

import random
import smtplib
from dataclasses import dataclass, field
from enum import StrEnum

import kombu.exceptions
import redis.exceptions
import requests
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import InterfaceError, OperationalError

from core.errors import PermanentError, RetryableError
from jobs.errors import PoisonMessageError


class Outcome(StrEnum):
    RETRY = "retry"
    PERMANENT = "permanent"


# Failures of the machinery around a task, not of its input: worth another try.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,  # incl. refused / reset
    TimeoutError,
    OperationalError,  # database restarted or unreachable
    InterfaceError,  # connection closed under us
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    requests.ConnectionError,
    requests.Timeout,
    smtplib.SMTPServerDisconnected,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)

# Never worth another try, whatever a task says.
ALWAYS_PERMANENT: tuple[type[BaseException], ...] = (PoisonMessageError,)


@dataclass(frozen=True)
class RetryPolicy:
    retry_on: tuple[type[BaseException], ...] = ()
    permanent_on: tuple[type[BaseException], ...] = (ObjectDoesNotExist, ValidationError)
    max_attempts: int = 5  # runs in total, the first included
    backoff_base: float = 2.0  # seconds; attempt n waits up to base * 2**(n-1)
    backoff_cap: float = 300.0
    max_deliveries: int = 3  # deliveries of one task id before it counts as poison
    alert: bool = True  # a dead letter of this task alerts (off for the alert task itself)
    notes: str = field(default="", compare=False)  # shown in docs/failures.md's retry table

    def classify(self, exc: BaseException) -> Outcome:
        if isinstance(exc, (ALWAYS_PERMANENT, self.permanent_on)):
            return Outcome.PERMANENT
        if isinstance(exc, self.retry_on):
            return Outcome.RETRY
        if isinstance(exc, PermanentError):
            return Outcome.PERMANENT
        if isinstance(exc, (RetryableError, *TRANSIENT_ERRORS)):
            return Outcome.RETRY
        return Outcome.PERMANENT

    def backoff(self, attempt: int) -> float:
        """Delay before attempt `attempt + 1`, after attempt `attempt` failed."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** max(attempt - 1, 0))
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography

    def ceiling(self, attempt: int) -> float:
        return min(self.backoff_cap, self.backoff_base * 2 ** max(attempt - 1, 0))
