"""List endpoints: one paginated envelope, `{"count", "next", "previous", "results"}` (limit/offset).

A list view answers with `paginated_response` and declares its response as `Serializer(many=True)`;
core/schema.py documents every such response as this envelope, with its two query parameters,
from this class. Unlike DRF's
LimitOffsetPagination, a `limit` or `offset` that is not a number in range is a 400 naming
the parameter, not silently replaced: the schema publishes the bounds, so the server keeps them.
"""

from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_OFFSET = 2**31 - 1  # a 32-bit int in every client; OFFSET past it would only return []


class Pagination(LimitOffsetPagination):
    default_limit = DEFAULT_LIMIT
    max_limit = MAX_LIMIT

    def get_limit(self, request: Request) -> int:
        return _bounded(request, self.limit_query_param, 1, MAX_LIMIT, DEFAULT_LIMIT)

    def get_offset(self, request: Request) -> int:
        return _bounded(request, self.offset_query_param, 0, MAX_OFFSET, 0)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, Any]]:
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            self.offset_query_param: {"minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        }
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"].update(bounds[parameter["name"]])
        return parameters

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        envelope: dict[str, Any] = super().get_paginated_response_schema(schema)
        envelope["required"] = ["count", "next", "previous", "results"]  # always sent, maybe null
        envelope["properties"]["count"]["minimum"] = 0
        for link in ("next", "previous"):
            envelope["properties"][link].pop("example", None)  # DRF's example host is not ours
        return envelope


def _bounded(request: Request, name: str, low: int, high: int, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and low <= int(raw) <= high):
        raise serializers.ValidationError({name: [f"Use a whole number from {low} to {high}."]})
    return int(raw)


def paginated_response(
    request: Request,
    view: APIView,
    queryset: QuerySet[Any],
    serializer: type[serializers.BaseSerializer[Any]],
) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)
