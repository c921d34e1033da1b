"""Invoice PDFs (reportlab), stored privately, regenerated idempotently.

The PDF is built with reportlab's `invariant` mode (no timestamps or random ids inside),
so the same order data and the same exchange rate always give the same bytes: the
content hash decides whether anything is written. The converted total uses the latest
FX rate for (order currency -> the customer's display currency) when one exists, and
says plainly when none does; its column holds the largest order total times the largest
storable rate, so no rate can make the task fail.
"""

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen import canvas

from core import tracing
from fx.selectors import latest_rate
from jobs.execution import Superseded, hold_current
from orders.currencies import format_amount, quantum
from orders.models import CONVERTED_DIGITS, CustomerProfile, Invoice, Order


@dataclass(frozen=True)
class Conversion:
    currency: str
    total: Decimal | None  # None: no rate known
    rate: Decimal | None
    as_of: datetime | None


def conversion_for(order: Order, currency: str) -> Conversion:
    if currency == order.currency:
        return Conversion(currency, order.total, Decimal(1), None)
    rate = latest_rate(base=order.currency, quote=currency)
    if rate is None:
        return Conversion(currency, None, None, None)
    # Exact product, one rounding: the default 28 digits would round a large total times a
    # long rate once before quantize() and once in it. The column holds any such product.
    with localcontext(prec=2 * CONVERTED_DIGITS):
        total = (order.total * rate.rate).quantize(quantum(currency))
    return Conversion(currency, total, rate.rate, rate.as_of)


def render_pdf(order: Order, conversion: Conversion) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4, invariant=1, pageCompression=0)
    pdf.setTitle(f"Invoice {order.number}")
    pdf.setAuthor("taskyard")
    height = A4[1]
    y = height - 25 * mm

    def line(text: str, x: float = 20 * mm, size: int = 10, bold: bool = False) -> None:
        nonlocal y
        pdf.setFont("Helvetica-Bold" if bold else "Helvetica", size)
        pdf.drawString(x, y, text)
        y -= size * 0.5 * mm + 3 * mm

    line(f"Invoice {order.number}", size=18, bold=True)
    line(f"Order date: {order.created_at:%Y-%m-%d %H:%M} UTC")
    line(f"Status: {order.status}")
    y -= 4 * mm
    line("SKU                      Qty        Unit price        Line total", bold=True)
    money = order.currency
    for item in order.lines.all():
        price, amount = format_amount(item.unit_price, money), format_amount(item.line_total, money)
        line(f"{item.sku:<24} {item.quantity:>5} {price:>17} {amount:>17}")
    y -= 4 * mm
    line(f"Total: {format_amount(order.total, money)} {money}", size=12, bold=True)
    if conversion.currency != order.currency:
        if conversion.total is None:
            line(f"No exchange rate {order.currency}->{conversion.currency} is available yet;")
            line(f"the amount is shown in {order.currency} only.")
        else:
            as_of = f"{conversion.as_of:%Y-%m-%d %H:%M} UTC" if conversion.as_of else "n/a"
            line(f"= {conversion.total} {conversion.currency} at {conversion.rate} (rate as of {as_of})")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _order_to_render(order_id: int) -> tuple[Order, str]:
    """The order with all a render reads, in two queries: the order joined to its invoice (if
    any) with the owner's display currency as a subquery, then its lines. Four reads before
    (order and owner, lines, profile, invoice) were a third of the documents worker's profile.
    Returns the order and the currency its invoice shows a converted total in."""
    profile_currency = CustomerProfile.objects.filter(user=OuterRef("owner")).values("display_currency")
    order = (
        Order.objects.select_related("invoice")
        .prefetch_related("lines")
        .annotate(display_currency=Subquery(profile_currency[:1]))
        .get(pk=order_id)
    )
    return order, order.display_currency or settings.ORDERS_DEFAULT_DISPLAY_CURRENCY


def invoice_render(*, order_id: int) -> Invoice:
    """Render and store the order's invoice; a no-op when nothing about it changed."""
    order, display_currency = _order_to_render(order_id)
    conversion = conversion_for(order, display_currency)
    with tracing.span("invoice render pdf", {"taskyard.order_id": order.pk}):
        content = render_pdf(order, conversion)
    digest = hashlib.sha256(content).hexdigest()
    # The invoice row is this task's ledger: absent until the first render (an order's invoice is
    # pending until then), one per order (unique), the content hash says what it holds.
    invoice = getattr(order, "invoice", None) or Invoice(order=order)
    if invoice.content_hash == digest and invoice.file and default_storage.exists(invoice.file):
        return invoice  # same order data, same rate: same bytes, already stored
    name = default_storage.save(f"invoices/order-{order.pk}-{digest[:16]}.pdf", ContentFile(content))
    previous = invoice.file
    fields = {
        "status": Invoice.Status.READY,
        "file": name,
        "content_hash": digest,
        "display_currency": conversion.currency,
        "converted_total": conversion.total,
        "fx_rate": conversion.rate,
        "fx_as_of": conversion.as_of,
        "generated_at": timezone.now(),
    }
    try:
        with transaction.atomic():
            hold_current()  # a run that was taken over (it stalled) records nothing
            # One upsert (INSERT ... ON CONFLICT (order_id) DO UPDATE): a concurrent first
            # render can't make it fail, and it takes one statement where update_or_create took
            # five (two savepoints, SELECT ... FOR UPDATE, INSERT or UPDATE, release).
            (invoice,) = Invoice.objects.bulk_create(
                [Invoice(order=order, **fields)],
                update_conflicts=True,
                unique_fields=["order"],
                update_fields=list(fields),
            )
    except Superseded:
        default_storage.delete(name)  # this run's file: nothing refers to it
        raise
    if previous and previous != name:
        default_storage.delete(previous)
    return invoice


def invoice_mark_failed(*, order_id: int) -> None:
    """The invoice task was dead-lettered: failed, unless an earlier render is READY."""
    invoice, created = Invoice.objects.get_or_create(
        order_id=order_id, defaults={"status": Invoice.Status.FAILED}
    )
    if not created and invoice.status != Invoice.Status.READY:
        Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.FAILED)
