from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs, outbox and dead letters"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # System checks for tasks; task metrics from worker signals; worker-process hooks
        # (heartbeats, received-task tracking), inert outside a worker; the slot ledger's
        # stamp of beat's send time on periodic-task messages (jobs/slots.py).
        from jobs import checks, metrics, slots, worker  # noqa: F401
