"""KYC API: thin views, nested Input/Output serializers, services do the work.

POST /api/kyc/submissions/         multipart: document_type, files (1..KYC_MAX_FILES);
                                   202 + Location of the status URL
GET  /api/kyc/submissions/         the user's submissions, newest first
GET  /api/kyc/submissions/<id>     status, timestamps, the vendor's reason codes (owner only)
"""

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiRequest, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.idempotency import idempotent
from core.pagination import paginated_response
from core.schema import IDEMPOTENCY_KEY, location, raises
from core.serializers import BuiltOnceModelSerializer
from core.users import request_user
from kyc import documents, selectors, services
from kyc.errors import DocumentInvalid, SubmissionAlreadyOpen, UnsupportedDocument, UploadTooLarge
from kyc.models import Document, DocumentType, Submission

ACCEPTED_TYPES = ", ".join(documents.CONTENT_TYPE.values())


@extend_schema_field(
    {
        "type": "string",
        "format": "binary",
        "maxLength": settings.KYC_MAX_FILE_BYTES,
        "description": f"A PDF, JPEG or PNG document (decided from its bytes, not its name), at most "
        f"{settings.KYC_MAX_FILE_BYTES} bytes; images {settings.KYC_IMAGE_MIN_SIDE}-"
        f"{settings.KYC_IMAGE_MAX_SIDE} pixels a side.",
    }
)
class DocumentFileField(serializers.FileField):
    pass


class DocumentOutputSerializer(BuiltOnceModelSerializer[Document]):
    purged = serializers.SerializerMethodField()

    class Meta:
        model = Document
        fields = ["position", "kind", "size", "width", "height", "purged"]

    def get_purged(self, document: Document) -> bool:
        return document.purged_at is not None


class SubmissionOutputSerializer(BuiltOnceModelSerializer[Submission]):
    url = serializers.SerializerMethodField()
    documents = DocumentOutputSerializer(many=True, read_only=True)

    class Meta:
        model = Submission
        fields = [
            "id",
            "url",
            "status",
            "document_type",
            "reason_codes",
            "documents",
            "created_at",
            "updated_at",
            "check_started_at",
            "decided_at",
            "documents_purged_at",
        ]

    def get_url(self, submission: Submission) -> str:
        return reverse("kyc:submission-detail", kwargs={"submission_id": submission.pk})


class SubmissionCollectionApi(APIView):
    parser_classes = [MultiPartParser]  # this view only; the rest of the API is JSON
    # The only view that takes a large body (core/body_limit.py refuses more, unread).
    body_limit = staticmethod(documents.max_request_bytes)

    class InputSerializer(serializers.Serializer[Any]):
        document_type = serializers.ChoiceField(choices=DocumentType.choices)
        files = serializers.ListField(
            child=DocumentFileField(allow_empty_file=False, use_url=False),
            allow_empty=False,
            max_length=settings.KYC_MAX_FILES,
        )

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        # Before anything reads the body (authentication may, for the CSRF check): sizes are
        # enforced while the files stream in, not after they were buffered.
        self.upload_limit = documents.UploadLimitHandler(request)
        if request.method == "POST":
            request.upload_handlers = [self.upload_limit, *request.upload_handlers]
        return super().initialize_request(request, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles first
        if request.method == "POST":
            self._receive(request)

    def _receive(self, request: Request) -> None:
        """Parse the body under the upload limits (its total size was checked before the view)."""
        try:
            _ = request.data
        except RequestDataTooBig as exc:
            raise UploadTooLarge("The form fields are too large.") from exc
        except TooManyFilesSent as exc:
            raise DocumentInvalid("Too many files.", errors={"files": ["Too many files."]}) from exc
        self.upload_limit.raise_problems()

    @extend_schema(responses=SubmissionOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        submissions = selectors.submission_list(user=request_user(request))
        return paginated_response(request, self, submissions, SubmissionOutputSerializer)

    @extend_schema(
        request={
            "multipart/form-data": OpenApiRequest(
                InputSerializer, encoding={"files": {"contentType": ACCEPTED_TYPES}}
            )
        },
        responses={202: SubmissionOutputSerializer},
        parameters=[IDEMPOTENCY_KEY, location(202, "The submission to poll")],
    )
    @raises(SubmissionAlreadyOpen, UploadTooLarge, UnsupportedDocument, DocumentInvalid)
    @idempotent
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        inspected = documents.inspect_all(data.validated_data["files"])
        user = request_user(request)
        submission = services.kyc_submission_start(
            user=user, document_type=data.validated_data["document_type"], documents=inspected
        )
        body = SubmissionOutputSerializer(
            selectors.submission_get(user=user, submission_id=str(submission.pk))
        ).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class SubmissionDetailApi(APIView):
    @extend_schema(responses=SubmissionOutputSerializer)
    def get(self, request: Request, submission_id: uuid.UUID) -> Response:
        submission = get_object_or_404(
            selectors.submission_list(user=request_user(request)), pk=submission_id
        )
        return Response(SubmissionOutputSerializer(submission).data)
