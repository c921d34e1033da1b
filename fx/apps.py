from django.apps import AppConfig


class FxConfig(AppConfig):
    name = "fx"
    verbose_name = "FX rates"
    default_auto_field = "django.db.models.BigAutoField"
