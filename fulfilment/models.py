"""Fulfilment's records: stock per SKU, and one ledger row per order for each effect.

StockItem          units available per SKU; a reservation takes them (never below 0).
StockReservation   the order's stock is reserved: written in the transaction that takes the
                   units, so a retry or redelivery finds it and takes nothing more.
PaymentCapture     the order's capture at the payment provider: claimed before the call, with a
                   deterministic Idempotency-Key, marked after it (never two charges).
Shipment           the order's shipment; the "shipped" email has its own ledger row
                   (notifications.EmailDelivery).
"""

from django.db import models


class StockItem(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    available = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=models.Q(available__gte=0), name="stock_not_negative")
        ]

    def __str__(self) -> str:
        return f"{self.sku}: {self.available}"


class StockReservation(models.Model):
    order = models.OneToOneField("orders.Order", on_delete=models.PROTECT, related_name="stock_reservation")
    lines = models.JSONField(default=list)  # [{"sku": ..., "quantity": ...}] as taken
    task_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"stock of order {self.order_id}"


class PaymentCapture(models.Model):
    class Status(models.TextChoices):
        CAPTURING = "capturing"  # claimed: a call to the provider is (or was) in flight
        CAPTURED = "captured"
        DECLINED = "declined"  # the provider refused for good; a replay may try again

    order = models.OneToOneField("orders.Order", on_delete=models.PROTECT, related_name="payment_capture")
    idempotency_key = models.CharField(max_length=100, unique=True)
    amount = models.CharField(max_length=32)  # as sent: formatted in the order's currency
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CAPTURING)
    provider_capture_id = models.CharField(max_length=100, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=64, blank=True, default="")  # task id
    captured_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"capture of order {self.order_id} ({self.status})"


class Shipment(models.Model):
    order = models.OneToOneField("orders.Order", on_delete=models.PROTECT, related_name="shipment")
    tracking_number = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.tracking_number
