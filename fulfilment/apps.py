from django.apps import AppConfig


class FulfilmentConfig(AppConfig):
    name = "fulfilment"
    verbose_name = "Fulfilment: stock, payment captures, shipments"
    default_auto_field = "django.db.models.BigAutoField"
