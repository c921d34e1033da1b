"""/api/orders/... (config/urls.py also routes /api/orders without the slash to the collection)."""

from django.urls import path

from orders import api

app_name = "orders"

urlpatterns = [
    path("", api.OrderCollectionApi.as_view(), name="collection"),
    path("export", api.OrderExportApi.as_view(), name="export"),
    path("<int:order_id>", api.OrderDetailApi.as_view(), name="detail"),
    path("<int:order_id>/cancel", api.OrderCancelApi.as_view(), name="cancel"),
    path("<int:order_id>/pay", api.OrderPayApi.as_view(), name="pay"),
    path("<int:order_id>/invoice", api.OrderInvoiceApi.as_view(), name="invoice"),
]
