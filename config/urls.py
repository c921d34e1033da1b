"""URL map: /api/ (JSON, auth required), health probes, admin, OpenAPI."""

from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView

from core import health, problems
from core.auth_api import MeApi, TokenObtainApi
from core.metrics import metrics_view
from fulfilment.api import OrderFulfilApi
from orders.api import OrderCollectionApi

api: list[URLPattern | URLResolver] = [
    path("me", MeApi.as_view(), name="me"),
    path("auth/token", TokenObtainApi.as_view(), name="auth-token"),
    path("jobs/", include("jobs.urls")),
    path("flows/", include("jobs.flows.urls")),
    path("fx/", include("fx.urls")),
    path("kyc/", include("kyc.urls")),
    path("orders", OrderCollectionApi.as_view()),  # POST /api/orders, no redirect for the slash
    path("orders/<int:order_id>/fulfil", OrderFulfilApi.as_view(), name="order-fulfil"),  # fulfilment/
    path("orders/", include("orders.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-docs"),
    # Last: any other /api/ URL is a problem+json 404, whatever DEBUG says.
    re_path(r"^", problems.not_found),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/", include(api)),
    path(settings.ADMIN_URL, admin.site.urls),
]

handler400 = problems.bad_request
handler403 = problems.permission_denied
handler404 = problems.not_found
handler500 = problems.server_error
