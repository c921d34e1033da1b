from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core: problems, auth, idempotency, health and metrics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core import (
            auth,  # noqa: F401 - forgets cached tokens when one is deleted or its user changes
            tracing,
        )

        # Before the first request or task: Django's instrumentation adds its middleware
        # here, ahead of WSGIHandler loading the middleware chain.
        if role := tracing.process_role():
            tracing.setup(role)
