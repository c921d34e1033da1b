from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs, outbox and dead letters"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal handlers: system checks for tasks, task metrics from worker signals,
        # worker-process hooks (heartbeats, received-task tracking; inert outside a worker).
        from core import health, metrics
        from jobs import broker, system_checks, task_metrics, worker  # noqa: F401

        health.register_check("broker", broker.check_connection)
        metrics.register_collector(task_metrics.InfraCollector)
