"""The project's URLs plus test-only views (config.settings.test only)."""

import time
from typing import Any

from django.db import transaction
from django.urls import include, path, reverse
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import handler400, handler403, handler404, handler500, urlpatterns
from core.idempotency import idempotent
from core.users import request_user
from jobs import outbox
from jobs.services import job_create


class ProbeCreateApi(APIView):
    """Creates a Job and enqueues a probe task: a stand-in for any creating POST."""

    class InputSerializer(serializers.Serializer[Any]):
        kind = serializers.CharField(max_length=50)

    @idempotent
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            job = job_create(owner=request_user(request), kind=data.validated_data["kind"])
            # Lets a test hold the transaction open to race a second request against it.
            time.sleep(float(request.headers.get("X-Probe-Delay", "0")))
            outbox.enqueue("probe.record", kwargs={"key": f"job-{job.id}"}, job_id=job.id)
        location = reverse("jobs:detail", kwargs={"job_id": job.id})
        return Response({"id": str(job.id)}, status=status.HTTP_201_CREATED, headers={"Location": location})


class ProbeBoomApi(APIView):
    """Fails with personal data in the request and the error (the Sentry scrubbing test)."""

    def post(self, request: Request) -> Response:
        email = request.data.get("email") if isinstance(request.data, dict) else None
        raise RuntimeError(f"crashed while handling {email}")


probe_patterns = [
    path("create", ProbeCreateApi.as_view(), name="probe-create"),
    path("boom", ProbeBoomApi.as_view(), name="probe-boom"),
]

# First: config.urls ends /api/ with a catch-all 404.
urlpatterns = [path("api/probe/", include(probe_patterns)), *urlpatterns]

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]
