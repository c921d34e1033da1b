"""Every periodic task of the project, in one place (UTC). Written to the database by
`manage.py setup_periodic_tasks`; docs/schedules.md's schedule table lists the same rows."""

from jobs.scheduling.definitions import Schedule

SCHEDULES: list[Schedule] = [
    Schedule(
        name="stuck-task-reaper",
        task="jobs.reap_stuck_tasks",
        every_seconds=60,
        description="Re-publishes tasks whose worker died (backstop; the relay reaps every 5 s).",
        when_missed="Nothing lost: the next run (or any relay) finds the same stale heartbeats.",
    ),
    Schedule(
        name="idempotency-key-purge",
        task="jobs.purge_idempotency_keys",
        crontab="27 * * * *",
        description="Deletes Idempotency-Key records past their TTL (24 h).",
        when_missed="Expired keys are already ignored; the next run deletes them.",
    ),
    Schedule(
        name="outbox-purge",
        task="jobs.purge_outbox",
        crontab="17 3 * * *",
        description="Deletes sent outbox rows, finished task runs and finished flows older than OUTBOX_RETENTION_DAYS.",
        when_missed="Rows wait for the next night; nothing depends on them being gone.",
    ),
    Schedule(
        name="dead-letter-digest",
        task="jobs.dead_letter_digest",
        crontab="0 8 * * *",
        description="Emails the admins the dead-letter fingerprints open for more than 24 h.",
        when_missed="Skipped; the next day's digest lists the same groups.",
    ),
    Schedule(
        name="kyc-document-purge",
        task="kyc.purge_documents",
        crontab="41 * * * *",
        description=(
            "Deletes KYC documents KYC_RETENTION_DAYS (30) days after the final decision; the "
            "submission keeps its decision and an audit event. Also sweeps orphaned upload files."
        ),
        when_missed=(
            "Documents past retention stay until the next run, which deletes all of them: it selects "
            "by decision time, not by slot, so nothing is skipped. Several missed runs need no backfill."
        ),
    ),
    Schedule(
        name="fx-sync-hourly",
        task="fx.sync_rates",
        crontab="0 * * * *",
        kwargs={"schedule": "fx-sync-hourly"},  # the slot ledger's key (jobs/scheduling/ledger.py)
        description="Stores the FX provider's latest rates; one run per hour (slot ledger).",
        when_missed=(
            "Beat restarting after downtime runs the newest missed hour at once; "
            "`manage.py backfill_schedule fx-sync-hourly --since <time>` runs the newest missed "
            "slot and marks older ones skipped. Rates older than 2 h are flagged stale."
        ),
    ),
]
