"""Job status API: GET /api/jobs/<id>, its result file, and POST /api/jobs/<id>/cancel."""

import mimetypes
import uuid

from django.core.files.storage import default_storage
from django.http import Http404
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.schema import raises
from core.serializers import BuiltOnceModelSerializer
from core.storage import private_download
from core.users import request_user
from jobs.errors import JobStateConflict
from jobs.models import Job
from jobs.selectors import job_list
from jobs.services import job_cancel


class JobDetailApi(APIView):
    class OutputSerializer(BuiltOnceModelSerializer[Job]):
        result_url = serializers.SerializerMethodField()

        class Meta:
            model = Job
            fields = [
                "id",
                "kind",
                "state",
                "progress",
                "progress_message",
                "result_url",
                "result",
                "error_code",
                "error",
                "created_at",
                "started_at",
                "finished_at",
                "cancel_requested_at",
            ]

        def get_result_url(self, job: Job) -> str | None:
            if not job.result_file:
                return None
            return reverse("jobs:result", kwargs={"job_id": job.id})

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request, job_id: uuid.UUID) -> Response:
        job = get_object_or_404(job_list(user=request_user(request)), pk=job_id)
        return Response(self.OutputSerializer(job).data)


class JobCancelApi(APIView):
    """POST /api/jobs/<id>/cancel: stored, so it holds across worker restarts (jobs/cancellation.py)."""

    @extend_schema(request=None, responses={202: JobDetailApi.OutputSerializer})
    @raises(JobStateConflict)
    def post(self, request: Request, job_id: uuid.UUID) -> Response:
        user = request_user(request)
        get_object_or_404(job_list(user=user), pk=job_id)
        job = job_cancel(job_id=job_id, owner=user)
        return Response(JobDetailApi.OutputSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobResultApi(APIView):
    @extend_schema(
        responses={
            (200, "application/octet-stream"): bytes,
            302: OpenApiResponse(
                description="Object storage: a redirect to a short-lived pre-signed URL of the file"
            ),
        }
    )
    def get(self, request: Request, job_id: uuid.UUID) -> HttpResponseBase:
        job = get_object_or_404(job_list(user=request_user(request)), pk=job_id, state=Job.State.SUCCEEDED)
        if not job.result_file or not default_storage.exists(job.result_file):
            raise Http404("this job has no result file")
        name = job.result_file.rsplit("/", 1)[-1]
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return private_download(job.result_file, filename=name, content_type=content_type)
