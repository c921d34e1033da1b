"""List endpoints: one paginated envelope, `{"count", "next", "previous", "results"}` (limit/offset)."""

from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


def paginated_response(
    request: Request,
    view: APIView,
    queryset: QuerySet[Any],
    serializer: type[serializers.BaseSerializer[Any]],
) -> Response:
    paginator = LimitOffsetPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)
