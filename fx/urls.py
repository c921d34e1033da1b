from django.urls import path

from fx.api import FxRatesApi

app_name = "fx"

urlpatterns = [
    path("rates", FxRatesApi.as_view(), name="rates"),
]
