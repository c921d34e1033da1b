"""Every amount is bounded: what an order can hold is checked before anything is written, and
no rate makes the invoice task fail.

The property test drives the real API (quantities, prices, line counts, every currency) and then
renders the invoice in-process through the service the task calls, converted at rates up to the
largest a rate column holds. One case runs on a real worker: a huge order in JPY ends READY.
"""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fx.models import RATE_DIGITS, RATE_PLACES, FxRate
from jobs.models import DeadLetter
from orders.currencies import AMOUNT_DIGITS, AMOUNT_PLACES, CURRENCIES, max_amount, minor_units, quantum
from orders.invoices import invoice_render
from orders.models import CONVERTED_DIGITS, CustomerProfile, Invoice, Order
from tests.harness import wait_until

URL = "/api/orders/"
MAX_RATE = Decimal(10) ** (RATE_DIGITS - RATE_PLACES) - Decimal(10) ** -RATE_PLACES


def line(currency: str = "EUR", quantity: int = 1, unit_price: str = "9.99") -> dict:
    return {"sku": "SKU-1", "quantity": quantity, "unit_price": unit_price, "currency": currency}


def set_rate(base: str, quote: str, rate: Decimal) -> None:
    now = timezone.now()
    FxRate.objects.update_or_create(
        base=base, quote=quote, as_of=datetime(2026, 1, 1, tzinfo=UTC),
        defaults={"rate": rate, "source": "test", "fetched_at": now},
    )  # fmt: skip


@pytest.mark.django_db
def test_the_reviews_order_is_a_400_naming_the_line_and_the_total(api):
    # quantity 10000 and unit price 99999999999.99 are each within their field's bounds
    response = api.post(URL, {"lines": [line(quantity=10_000, unit_price="99999999999.99")]}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "amount-out-of-range"
    assert set(body["errors"]) == {"lines.0.line_total", "total"}
    assert "99999999999.99 EUR" in body["errors"]["lines.0.line_total"][0]  # the most, in the currency
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_lines_within_bounds_whose_sum_is_not_name_only_the_total(api):
    half = str(max_amount("JPY") // 2 + 1)
    response = api.post(URL, {"lines": [line("JPY", 1, half), line("JPY", 1, half)]}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"total"}


@pytest.mark.django_db
def test_the_largest_order_is_accepted_to_the_last_minor_unit(api):
    most = str(max_amount("KWD"))
    response = api.post(URL, {"lines": [line("KWD", 1, most)]}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["total"] == most == "99999999999.999"


def test_the_converted_total_column_holds_the_largest_total_at_the_largest_rate():
    largest = max_amount("KWD") * MAX_RATE
    whole_digits = len(str(int(largest)))
    assert whole_digits + AMOUNT_PLACES <= CONVERTED_DIGITS
    assert Order._meta.get_field("total").max_digits == AMOUNT_DIGITS
    assert Invoice._meta.get_field("converted_total").max_digits == CONVERTED_DIGITS


@st.composite
def orders(draw: st.DrawFn) -> tuple[list[dict], str, Decimal]:
    currency = draw(st.sampled_from(sorted(CURRENCIES)))
    places = minor_units(currency)
    count = draw(st.integers(1, 100))
    quantities = st.integers(1, 10_000) | st.sampled_from([0, 10_001])
    whole = st.integers(0, 10**11 - 1) | st.sampled_from([10**11 - 1, 10**10, 1])
    fraction = st.integers(0, 10**places - 1) if places else st.just(0)
    lines = []
    for _ in range(draw(st.sampled_from([1, 2, count]))):
        amount = Decimal(draw(whole)) + Decimal(draw(fraction)).scaleb(-places)
        price = str(max(amount, quantum(currency)).quantize(quantum(currency)))
        lines.append(line(currency, draw(quantities), price))
    rate = draw(st.sampled_from([MAX_RATE, Decimal("0.0000000001"), Decimal("157.3521")]) | st.decimals(
        min_value=Decimal("0.0000000001"), max_value=MAX_RATE, places=RATE_PLACES
    ))  # fmt: skip
    return lines, draw(st.sampled_from(["JPY", "EUR", "KWD", currency])), rate


@pytest.mark.django_db
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(order=orders())
def test_no_order_a_client_can_send_makes_a_5xx_or_a_failing_invoice(api, user, order):
    lines, display, rate = order
    CustomerProfile.objects.update_or_create(user=user, defaults={"display_currency": display})
    set_rate(lines[0]["currency"], display, rate)

    response = api.post(URL, {"lines": lines}, format="json")

    assert response.status_code in (201, 400), response.content
    body = response.json()
    if response.status_code == 400:
        assert body["errors"], body  # each refusal names its fields
        return
    invoice = invoice_render(order_id=body["id"])  # what orders.render_invoice_pdf runs
    assert invoice.status == Invoice.Status.READY
    assert invoice.converted_total is not None
    assert invoice.converted_total == invoice.converted_total.quantize(quantum(display))


@pytest.mark.django_db(transaction=True)
def test_a_huge_order_converted_to_jpy_renders_on_a_real_worker(live, api, user):
    CustomerProfile.objects.create(user=user, display_currency="JPY")
    set_rate("EUR", "JPY", Decimal("157.3521"))
    most = str(max_amount("EUR"))  # 99999999999.99 EUR: 1.57e13 JPY, past the old numeric(16, 3)
    order = api.post(URL, {"lines": [line("EUR", 1, most)]}, format="json").json()

    invoice = wait_until(
        lambda: Invoice.objects.filter(order_id=order["id"], status=Invoice.Status.READY).first(),
        timeout=60,
        message="the invoice",
    )

    assert invoice.converted_total == (Decimal(most) * Decimal("157.3521")).quantize(Decimal(1))
    assert not DeadLetter.objects.exists()
    shown = api.get(f"{URL}{order['id']}").json()["invoice"]
    assert shown["converted_total"] == "15735209999998"
