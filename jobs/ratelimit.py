"""A task's share of a global rate limit: take a token, or run again when one will be free.

    take_or_reschedule(vendor_bucket())   # raises Reschedule(delay) when no token is free

The bucket is core/ratelimit.py's (one Redis token bucket shared by every worker); the base
task re-enqueues a rescheduled task through the outbox without spending an attempt.
"""

import random

from core.ratelimit import TokenBucket
from jobs.errors import Reschedule


def take_or_reschedule(bucket: TokenBucket, *, what: str = "") -> None:
    """Take a token or ask the base task to run this task again when one will be free.

    The delay is the time until the next token plus up to one token interval of jitter,
    so tasks that were refused together don't all come back in the same instant.
    """
    decision = bucket.take()
    if decision.allowed:
        return
    jitter = random.uniform(0, bucket.interval)  # noqa: S311 - spreading retries, not cryptography
    raise Reschedule(
        decision.wait_seconds + jitter,
        f"rate limit {what or bucket.key}: next token in {decision.wait_seconds:.2f}s",
    )
