"""Admin: flows with their steps; cancel a flow or a job; retry a flow's failed step.

Looking needs staff and the view permission; acting needs `jobs.act_on_flow`. A retry goes
through jobs/dead_letters.py `dead_letter_replay`, so it is audited on the step's DeadLetter
(who, when, the note) like any replay; a cancel is stored on the flow or job (who and when).
"""

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin
from core.problems import ApplicationError
from jobs.admin_actions import actor, confirmed
from jobs.flows.services import flow_cancel, flow_step_retry
from jobs.models import DeadLetter, Flow, FlowStep, Job
from jobs.services import job_cancel

ACT_PERMISSION = "jobs.act_on_flow"


def _each(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    action: str,
    act: Callable[[str], object],
) -> TemplateResponse | None:
    """Confirm, then `act(pk)` on each selected row; refusals (a flow over already) are listed."""
    form = confirmed(model_admin, request, queryset, action, "Cancel")
    if isinstance(form, TemplateResponse):
        return form
    done, refused = 0, []
    for pk in queryset.values_list("pk", flat=True):
        try:
            act(str(pk))
            done += 1
        except ApplicationError as exc:
            refused.append(f"{pk}: {exc.detail}")
    model_admin.message_user(request, f"Cancelled {done}. " + " ".join(refused), messages.SUCCESS)
    return None


def _link(model: type[Model], pk: Any, label: str) -> str:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, label)


class ActAdmin(ReadOnlyAdmin):
    def has_act_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ACT_PERMISSION)


class StepInline(admin.TabularInline[FlowStep, Flow]):
    model = FlowStep
    extra = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = (
        "name",
        "task_name",
        "state",
        "on_failure",
        "attempts",
        "error_code",
        "started_at",
        "finished_at",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Flow)
class FlowAdmin(ActAdmin):
    list_display = ["id", "kind", "owner", "state", "failed_step", "failures", "created_at", "finished_at"]
    list_filter = ["state", "kind"]
    search_fields = ["=id", "kind", "dedupe_key"]
    readonly_fields = ["nested_in"]
    inlines = [StepInline]
    actions = ["cancel"]

    @admin.display(description="nested in")
    def nested_in(self, obj: Flow) -> str:
        step = obj.parent_step
        return _link(Flow, step.flow_id, f"{step.flow_id} / {step.name}") if step else "-"

    @admin.action(description="Cancel selected flows (stored: survives worker restarts)", permissions=["act"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Flow]) -> TemplateResponse | None:
        return _each(
            self, request, queryset, "cancel", lambda pk: flow_cancel(flow_id=pk, actor=actor(request))
        )


@admin.register(FlowStep)
class FlowStepAdmin(ActAdmin):
    list_display = [
        "name",
        "flow",
        "task_name",
        "state",
        "attempts",
        "error_code",
        "finished_at",
        "dead_letter",
    ]
    list_filter = ["state", "on_failure", "task_name"]
    search_fields = ["=flow__id", "name", "=root_id"]
    actions = ["retry"]

    @admin.display(description="dead letter")
    def dead_letter(self, obj: FlowStep) -> str:
        found = (
            DeadLetter.objects.filter(root_id=obj.root_id).order_by("-created_at").first()
            if obj.root_id
            else None
        )
        return _link(DeadLetter, found.pk, f"#{found.pk} ({found.status})") if found else "-"

    @admin.action(description="Retry selected failed steps (through the outbox)", permissions=["act"])
    def retry(self, request: HttpRequest, queryset: QuerySet[FlowStep]) -> TemplateResponse | None:
        form = confirmed(self, request, queryset, "retry", "Retry")
        if isinstance(form, TemplateResponse):
            return form
        done = [
            flow_step_retry(step_id=pk, actor=actor(request), note=form.cleaned_data["note"])
            for pk in queryset.values_list("pk", flat=True)
        ]
        retried = sum(1 for task_id in done if task_id)
        self.message_user(
            request,
            f"Retried {retried}; skipped {len(done) - retried} (not failed, or no open dead letter).",
            messages.SUCCESS,
        )
        return None


@admin.action(description="Cancel selected jobs (stored: survives worker restarts)", permissions=["act"])
def cancel_jobs(model_admin: Any, request: HttpRequest, queryset: QuerySet[Job]) -> TemplateResponse | None:
    return _each(model_admin, request, queryset, "cancel_jobs", lambda pk: job_cancel(job_id=pk))
