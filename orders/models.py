"""Orders, their lines and invoices. Money is Decimal with an ISO 4217 code."""

from django.conf import settings
from django.db import models

from fx.models import RATE_DIGITS, RATE_PLACES
from orders.currencies import AMOUNT_DIGITS, AMOUNT_PLACES

# An order total times any storable rate: the converted total always fits, so rendering an
# invoice never fails on the size of its number, whatever the rate.
CONVERTED_DIGITS = AMOUNT_DIGITS + RATE_DIGITS - RATE_PLACES


class Order(models.Model):
    # The order's lines as a list, when a selector prefetched them or the create just wrote them
    # (orders/selectors.py, orders/services.py): what the API serializes, without another query.
    line_list: list["OrderLine"]

    class Status(models.TextChoices):
        PENDING_PAYMENT = "pending_payment"
        PAID = "paid"
        CANCELLED = "cancelled"

    class CancelReason(models.TextChoices):
        CUSTOMER = "customer"
        UNPAID = "unpaid"  # the delayed auto-cancel

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING_PAYMENT)
    currency = models.CharField(max_length=3)
    total = models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES)
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=20, choices=CancelReason.choices, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["owner", "id"], name="order_owner_id")]
        constraints = [
            models.CheckConstraint(condition=models.Q(total__gte=0), name="order_total_not_negative")
        ]

    def __str__(self) -> str:
        return self.number

    @property
    def number(self) -> str:
        return f"TY-{self.pk:08d}"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField()
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES)
    line_total = models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["order", "position"], name="order_line_position"),
            models.CheckConstraint(condition=models.Q(quantity__gte=1), name="order_line_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"


class Invoice(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="invoice")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    file = models.CharField(max_length=300, blank=True, default="")  # private storage name
    content_hash = models.CharField(max_length=64, blank=True, default="")
    display_currency = models.CharField(max_length=3, blank=True, default="")
    converted_total = models.DecimalField(
        max_digits=CONVERTED_DIGITS, decimal_places=AMOUNT_PLACES, null=True, blank=True
    )
    fx_rate = models.DecimalField(max_digits=RATE_DIGITS, decimal_places=RATE_PLACES, null=True, blank=True)
    fx_as_of = models.DateTimeField(null=True, blank=True)
    generated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"invoice {self.order_id} ({self.status})"


class CustomerProfile(models.Model):
    """Billing preferences: the currency invoices show a converted total in."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="customer_profile"
    )
    display_currency = models.CharField(max_length=3, default="EUR")

    def __str__(self) -> str:
        return f"{self.user_id}: {self.display_currency}"
