"""Bench-only URLs: the project's, plus the floor S1 measures `POST /api/orders` against.

The floor is what the issue that asked for it describes: a plain DRF APIView that INSERTs one
row, with no authentication, throttle or serializer, served by the same gunicorn (same
settings, same middleware) as the order create. It exists only under config.settings.bench.
"""

import json
from typing import Any

from django.db import connection
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bench.stack import BARE_PATH
from config.urls import urlpatterns as project


class BareCreate(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = ()

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with connection.cursor() as cursor:  # one INSERT, autocommit: the least a create can do
            cursor.execute(
                "INSERT INTO bench_bare (body) VALUES (%s) RETURNING id", [json.dumps(request.data)]
            )
            (row_id,) = cursor.fetchone()
        return Response({"id": row_id}, status=201)


urlpatterns = [*project, path(BARE_PATH.lstrip("/"), BareCreate.as_view())]
