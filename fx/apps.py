from django.apps import AppConfig


class FxConfig(AppConfig):
    name = "fx"
    verbose_name = "FX rates"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from core import metrics
        from fx.metrics import FxCollector

        metrics.register_collector(FxCollector)
