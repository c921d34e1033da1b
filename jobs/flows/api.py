"""Flow status API: GET /api/flows/<id> (the flow and each step), POST /api/flows/<id>/cancel."""

import uuid
from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.schema import raises
from core.serializers import BuiltOnceModelSerializer
from core.users import request_user
from jobs.flows.errors import FlowStateConflict
from jobs.flows.selectors import flow_list, nested_flows
from jobs.flows.services import flow_cancel
from jobs.models import Flow, FlowStep


class StepOutputSerializer(BuiltOnceModelSerializer[FlowStep]):
    task = serializers.CharField(source="task_name")
    flow_url = serializers.SerializerMethodField(help_text="A nested flow's own status URL")

    class Meta:
        model = FlowStep
        fields = [
            "name",
            "task",
            "state",
            "on_failure",
            "after",
            "attempts",
            "error_code",
            "error",
            "queued_at",
            "started_at",
            "finished_at",
            "flow_url",
        ]

    def get_flow_url(self, step: FlowStep) -> str | None:
        nested = self.context.get("nested", {}).get(step.pk)
        return reverse("flows:detail", kwargs={"flow_id": nested}) if nested else None


class FlowOutputSerializer(BuiltOnceModelSerializer[Flow]):
    url = serializers.SerializerMethodField()
    cancel_url = serializers.SerializerMethodField()
    failed_step = serializers.SlugRelatedField[FlowStep](slug_field="name", read_only=True, allow_null=True)
    steps = StepOutputSerializer(many=True, read_only=True)

    class Meta:
        model = Flow
        fields = [
            "id",
            "kind",
            "url",
            "state",
            "failed_step",
            "failures",
            "created_at",
            "started_at",
            "finished_at",
            "cancel_requested_at",
            "cancel_url",
            "steps",
        ]

    def get_url(self, flow: Flow) -> str:
        return reverse("flows:detail", kwargs={"flow_id": flow.pk})

    def get_cancel_url(self, flow: Flow) -> str | None:
        if flow.state != Flow.State.RUNNING or flow.parent_step_id is not None:
            return None
        return reverse("flows:cancel", kwargs={"flow_id": flow.pk})


def flow_body(flow: Flow) -> dict[str, Any]:
    return dict(FlowOutputSerializer(flow, context={"nested": nested_flows(flow=flow)}).data)


class FlowDetailApi(APIView):
    @extend_schema(responses=FlowOutputSerializer)
    def get(self, request: Request, flow_id: uuid.UUID) -> Response:
        flow = get_object_or_404(flow_list(user=request_user(request)).prefetch_related("steps"), pk=flow_id)
        return Response(flow_body(flow))


class FlowCancelApi(APIView):
    @extend_schema(request=None, responses={202: FlowOutputSerializer})
    @raises(FlowStateConflict)
    def post(self, request: Request, flow_id: uuid.UUID) -> Response:
        user = request_user(request)
        get_object_or_404(flow_list(user=user), pk=flow_id)
        flow = flow_cancel(flow_id=str(flow_id), actor=user, owner=user)
        return Response(flow_body(flow), status=status.HTTP_202_ACCEPTED)
