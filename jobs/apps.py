from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs, outbox and dead letters"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Worker-process hooks (heartbeats, received-task tracking); inert outside a worker.
        from jobs import worker  # noqa: F401
