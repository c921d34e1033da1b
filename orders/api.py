"""Orders API: thin views, nested Input/Output serializers, services do the work."""

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.core.files.storage import default_storage
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.idempotency import idempotent
from core.pagination import paginated_response
from core.storage import private_download
from core.users import request_user
from orders import exports, selectors, services
from orders.currencies import CURRENCIES, format_amount, minor_units, quantum
from orders.errors import InvoiceNotReady
from orders.models import Invoice, Order, OrderLine

IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False, description="Replays the first response"
)
DOWNLOAD_REDIRECT = OpenApiResponse(
    description="Object storage: a redirect to a short-lived pre-signed URL of the file"
)
SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@extend_schema_field(OpenApiTypes.STR)
class MoneyField(serializers.Field[Decimal, Decimal, str, Any]):
    """An amount as a string with the currency's own number of decimal places."""

    def __init__(self, currency_of: str = "currency", **kwargs: Any) -> None:
        self.currency_of = currency_of
        super().__init__(read_only=True, source="*", **kwargs)

    def to_representation(self, value: Any) -> str:
        currency = value.currency if hasattr(value, "currency") else value.order.currency
        return format_amount(getattr(value, self.field_name or ""), currency)


class LineOutputSerializer(serializers.ModelSerializer[OrderLine]):
    unit_price = MoneyField()
    line_total = MoneyField()

    class Meta:
        model = OrderLine
        fields = ["sku", "quantity", "unit_price", "line_total"]


class OrderOutputSerializer(serializers.ModelSerializer[Order]):
    number = serializers.CharField(read_only=True)
    total = MoneyField()
    lines = LineOutputSerializer(many=True, read_only=True)
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
    sku = serializers.CharField(max_length=64)
    quantity = serializers.IntegerField(min_value=1, max_value=10_000)
    unit_price = serializers.DecimalField(max_digits=14, decimal_places=3, min_value=Decimal("0.001"))
    currency = serializers.CharField(min_length=3, max_length=3)

    def validate_sku(self, value: str) -> str:
        if not SKU.match(value):
            raise serializers.ValidationError("Use letters, digits, '.', '_' or '-' (1-64 characters).")
        return value

    def validate_currency(self, value: str) -> str:
        if value not in CURRENCIES:
            raise serializers.ValidationError("Not an ISO 4217 currency code (upper case, e.g. EUR).")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        currency, price = attrs["currency"], attrs["unit_price"]
        if price != price.quantize(quantum(currency)):
            raise serializers.ValidationError(
                {"unit_price": [f"{currency} has {minor_units(currency)} decimal place(s)."]}
            )
        return attrs


class OrderCollectionApi(APIView):
    class InputSerializer(serializers.Serializer[Any]):
        lines = LineInputSerializer(many=True, allow_empty=False, max_length=100)  # type: ignore[call-arg]

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
        request=InputSerializer, responses={201: OrderOutputSerializer}, parameters=[IDEMPOTENCY_HEADER]
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order = services.order_create(user=request_user(request), lines=data.validated_data["lines"])
        order = selectors.order_get(user=request_user(request), order_id=order.pk)
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

    @extend_schema(request=None, responses={202: OutputSerializer}, parameters=[IDEMPOTENCY_HEADER])
    @idempotent
    def post(self, request: Request) -> Response:
        job = exports.order_export_start(user=request_user(request))
        url = reverse("jobs:detail", kwargs={"job_id": job.id})
        return Response(
            {"job_id": str(job.id), "status_url": url},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": url},
        )
