"""Admin: stock levels (staff edit them), and the read-only ledgers of captures and shipments."""

from django.contrib import admin

from core.admin import ReadOnlyAdmin
from fulfilment.models import PaymentCapture, Shipment, StockItem, StockReservation


@admin.register(StockItem)
class StockItemAdmin(admin.ModelAdmin[StockItem]):
    list_display = ["sku", "available", "updated_at"]
    search_fields = ["sku"]


@admin.register(StockReservation)
class StockReservationAdmin(ReadOnlyAdmin):
    list_display = ["order", "lines", "created_at"]
    search_fields = ["=order__id"]


@admin.register(PaymentCapture)
class PaymentCaptureAdmin(ReadOnlyAdmin):
    list_display = ["order", "status", "amount", "currency", "attempts", "provider_capture_id", "captured_at"]
    list_filter = ["status"]
    search_fields = ["=order__id", "provider_capture_id", "idempotency_key"]


@admin.register(Shipment)
class ShipmentAdmin(ReadOnlyAdmin):
    list_display = ["order", "tracking_number", "created_at"]
    search_fields = ["=order__id", "tracking_number"]
