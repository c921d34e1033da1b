"""POST /api/orders/<id>/fulfil: the owner starts fulfilling a paid order -> 202 + the flow's URL."""

from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.idempotency import idempotent
from core.schema import IDEMPOTENCY_KEY, location, raises
from core.users import request_user
from fulfilment.errors import FulfilmentConflict
from fulfilment.services import fulfilment_start
from orders.selectors import order_list


class OrderFulfilApi(APIView):
    class OutputSerializer(serializers.Serializer[Any]):
        flow_id = serializers.UUIDField()
        status_url = serializers.CharField()

    @extend_schema(
        request=None,
        responses={202: OutputSerializer},
        parameters=[IDEMPOTENCY_KEY, location(202, "The flow to poll")],
    )
    @raises(FulfilmentConflict)
    @idempotent
    def post(self, request: Request, order_id: int) -> Response:
        user = request_user(request)
        get_object_or_404(order_list(user=user), pk=order_id)  # another user's order: 404
        flow = fulfilment_start(user=user, order_id=order_id)
        url = reverse("flows:detail", kwargs={"flow_id": flow.pk})
        return Response(
            {"flow_id": str(flow.pk), "status_url": url},
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": url},
        )
