"""Orders API: thin views, nested Input/Output serializers, services do the work."""

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.core.files.storage import default_storage
from django.core.validators import RegexValidator
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.fields import FixedChoiceField, StrictCharField, StrictIntegerField
from core.idempotency import idempotent
from core.pagination import paginated_response
from core.schema import IDEMPOTENCY_KEY, location, raises
from core.serializers import BuiltOnceModelSerializer
from core.storage import private_download
from core.users import request_user
from orders import exports, selectors, services
from orders.currencies import AMOUNT_DIGITS, AMOUNT_PLACES, CURRENCIES, format_amount, minor_units, quantum
from orders.errors import AmountOutOfRange, InvoiceNotReady, OrderStateConflict
from orders.models import Invoice, Order, OrderLine

DOWNLOAD_REDIRECT = OpenApiResponse(
    description="Object storage: a redirect to a short-lived pre-signed URL of the file"
)
MAX_LINES = 100
MAX_QUANTITY = 10_000
SKU = RegexValidator(
    r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z", "Use letters, digits, '.', '_' or '-' (1-64 characters)."
)
_WHOLE = AMOUNT_DIGITS - AMOUNT_PLACES
# A positive decimal string: up to 11 digits, then up to 3 places; "0", "00.5" and "1e3" are not prices.
PRICE = RegexValidator(
    rf"\A(?:[1-9][0-9]{{0,{_WHOLE - 1}}}(?:\.[0-9]{{1,{AMOUNT_PLACES}}})?|0\.(?:[1-9][0-9]{{0,2}}|0[1-9][0-9]?|00[1-9]))\Z",
    f'Use a positive amount as a string, e.g. "9.99": at most {_WHOLE} digits, then at most '
    f"{AMOUNT_PLACES} decimal places.",
)


@extend_schema_field(OpenApiTypes.STR)
class MoneyField(serializers.Field[Decimal, Decimal, str, Any]):
    """An amount as a string with the currency's own number of decimal places."""

    def __init__(self, currency_of: str = "currency", **kwargs: Any) -> None:
        self.currency_of = currency_of
        super().__init__(read_only=True, source="*", **kwargs)

    def to_representation(self, value: Any) -> str:
        currency = value.currency if hasattr(value, "currency") else value.order.currency
        return format_amount(getattr(value, self.field_name or ""), currency)


class LineOutputSerializer(BuiltOnceModelSerializer[OrderLine]):
    unit_price = MoneyField()
    line_total = MoneyField()

    class Meta:
        model = OrderLine
        fields = ["sku", "quantity", "unit_price", "line_total"]


class OrderOutputSerializer(BuiltOnceModelSerializer[Order]):
    number = serializers.CharField(read_only=True)
    total = MoneyField()
    # `line_list`: the lines the create just wrote, or the selectors' prefetch; never a query.
    lines = LineOutputSerializer(source="line_list", many=True, read_only=True)
    invoice = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = [
            "id",
            "number",
            "url",
            "status",
            "currency",
            "total",
            "lines",
            "invoice",
            "created_at",
            "paid_at",
            "cancelled_at",
            "cancel_reason",
        ]

    def get_url(self, order: Order) -> str:
        return reverse("orders:detail", kwargs={"order_id": order.pk})

    def get_invoice(self, order: Order) -> dict[str, Any]:
        invoice: Invoice | None = getattr(order, "invoice", None)
        state = invoice.status if invoice else Invoice.Status.PENDING
        ready = state == Invoice.Status.READY
        return {
            "status": state,
            "url": reverse("orders:invoice", kwargs={"order_id": order.pk}) if ready else None,
            "display_currency": invoice.display_currency if invoice and ready else None,
            "converted_total": format_amount(invoice.converted_total, invoice.display_currency)
            if invoice and ready and invoice.converted_total is not None
            else None,
        }


class LineInputSerializer(serializers.Serializer[Any]):
    sku = StrictCharField(max_length=64, validators=[SKU])
    quantity = StrictIntegerField(min_value=1, max_value=MAX_QUANTITY)
    unit_price = StrictCharField(
        max_length=AMOUNT_DIGITS + 1,
        validators=[PRICE],
        help_text="With at most as many decimal places as the currency has (JPY 0, EUR 2, KWD 3).",
    )
    currency = FixedChoiceField(
        choices=tuple(sorted(CURRENCIES)), help_text="ISO 4217, upper case; the same on every line."
    )

    def validate_unit_price(self, value: str) -> Decimal:
        return Decimal(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        currency, price = attrs["currency"], attrs["unit_price"]
        if price != price.quantize(quantum(currency)):
            raise serializers.ValidationError(
                {"unit_price": [f"{currency} has {minor_units(currency)} decimal place(s)."]}
            )
        return attrs


class OrderCollectionApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        lines = LineInputSerializer(many=True, allow_empty=False, max_length=MAX_LINES)  # type: ignore[call-arg]

        def validate_lines(self, value: list[dict[str, Any]]) -> list[services.LineInput]:
            currency = value[0]["currency"]
            mixed = [
                {} if line["currency"] == currency else {"currency": [f"All lines must use {currency}."]}
                for line in value
            ]
            if any(mixed):
                raise serializers.ValidationError(mixed)
            return [services.LineInput(**line) for line in value]

    @extend_schema(responses=OrderOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return paginated_response(
            request, self, selectors.order_list(user=request_user(request)), OrderOutputSerializer
        )

    @extend_schema(
        request=InputSerializer,
        responses={201: OrderOutputSerializer},
        parameters=[IDEMPOTENCY_KEY, location(201, "The new order")],
        description="Rules across fields that the request schema cannot state, answered with 400 "
        "naming the field: every line has the same currency; a unit price has at most the "
        "currency's decimal places; each line total and the order total fit an amount "
        "(`amount-out-of-range`).",
    )
    @raises(AmountOutOfRange)
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order = services.order_create(user=request_user(request), lines=data.validated_data["lines"])
        body = OrderOutputSerializer(order).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": body["url"]})


class OrderDetailApi(APIView):
    @extend_schema(responses=OrderOutputSerializer)
    def get(self, request: Request, order_id: int) -> Response:
        order = get_object_or_404(selectors.order_list(user=request_user(request)), pk=order_id)
        return Response(OrderOutputSerializer(order).data)


class OrderTransitionApi(APIView):
    """POST /<id>/<action>: the owner moves the order on (409 when its state does not allow it)."""

    transition: Callable[..., Order]

    @extend_schema(request=None, responses=OrderOutputSerializer)
    @raises(OrderStateConflict)
    def post(self, request: Request, order_id: int) -> Response:
        user = request_user(request)
        get_object_or_404(selectors.order_list(user=user), pk=order_id)
        type(self).transition(user=user, order_id=order_id)
        return Response(OrderOutputSerializer(selectors.order_get(user=user, order_id=order_id)).data)


class OrderCancelApi(OrderTransitionApi):
    transition = staticmethod(services.order_cancel)


class OrderPayApi(OrderTransitionApi):
    transition = staticmethod(services.order_pay)


class OrderInvoiceApi(APIView):
    @extend_schema(responses={(200, "application/pdf"): bytes, 302: DOWNLOAD_REDIRECT})
    @raises(InvoiceNotReady)
    def get(self, request: Request, order_id: int) -> HttpResponseBase:
        order = get_object_or_404(selectors.order_list(user=request_user(request)), pk=order_id)
        invoice: Invoice | None = getattr(order, "invoice", None)
        if (
            invoice is None
            or invoice.status != Invoice.Status.READY
            or not default_storage.exists(invoice.file)
        ):
            raise InvoiceNotReady(
                f"The invoice of {order.number} is not ready yet; see `invoice.status` on the order."
            )
        return private_download(
            invoice.file, filename=f"invoice-{order.number}.pdf", content_type="application/pdf"
        )


class OrderExportApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        job_id = serializers.UUIDField()
        status_url = serializers.CharField()

    @extend_schema(
        request=None,
        responses={202: OutputSerializer},
        parameters=[IDEMPOTENCY_KEY, location(202, "The job to poll")],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        job = exports.order_export_start(user=request_user(request))
        url = reverse("jobs:detail", kwargs={"job_id": job.id})
        return Response(
            {"job_id": str(job.id), "status_url": url},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": url},
        )
