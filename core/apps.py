from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core: problems, auth, idempotency, health and metrics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Before the first request or task: Django's instrumentation adds its middleware
        # here, ahead of WSGIHandler loading the middleware chain.
        from core import tracing

        if role := tracing.process_role():
            tracing.setup(role)
