"""FX tasks: the hourly rate sync (beat schedule `fx-sync-hourly`, config/schedules.py)."""

from typing import Any

from celery import shared_task

from fx import services
from jobs.base_task import BaseTask
from jobs.policy import RetryPolicy
from jobs.queues import Queue
from jobs.scheduling import ledger

SYNC_SCHEDULE = "fx-sync-hourly"

# Provider 5xx, 429, timeouts and connection errors are retried; any other 4xx or an
# unreadable table dead-letters at once (fx/client.py). Backoff ceilings 60, 120, 240 and
# 480 s: a slot's retries end within about 15 minutes, well inside its hour.
SYNC_POLICY = RetryPolicy(
    max_attempts=5,
    backoff_base=60.0,
    backoff_cap=600.0,
    notes="provider 5xx/429/timeouts retried (all within ~15 min of the slot); 4xx and bad tables dead-letter",
)


@shared_task(
    base=BaseTask,
    bind=True,
    name="fx.sync_rates",
    queue=Queue.DEFAULT,
    policy=SYNC_POLICY,
    soft_time_limit=45,
    time_limit=60,
)
def sync_rates(self: Any, schedule: str = SYNC_SCHEDULE, slot: str | None = None) -> int:
    """Store the provider's latest rates, once per slot of `schedule`. Returns rows stored
    (0 when the slot was already claimed: a second beat, a duplicate, a re-run)."""
    with ledger.scheduled_run(self, schedule=schedule, slot=slot) as run:
        if run.skipped:
            return 0
        return services.fx_rates_sync().stored
