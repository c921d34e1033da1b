"""Admin: dead letters (review, group, replay, resolve, discard) and read-only task records.

Staff login is required for every page (Django admin); replay, resolve and discard
also need the `jobs.act_on_deadletter` permission. Every action goes through
jobs/dead_letters.py, which records who acted and when and makes a second click a no-op.
"""

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin
from jobs import dead_letters
from jobs.admin_actions import NoteForm, actor, confirmed
from jobs.flows.admin import ActAdmin, cancel_jobs  # also registers the flow admins
from jobs.models import DeadLetter, Job, OutboxMessage, ScheduleSlot, TaskRun

ACT_PERMISSION = "jobs.act_on_deadletter"


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    windows = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("lt1h", "last hour"),
            ("lt24h", "last 24 hours"),
            ("gt24h", "older than 24 hours"),
            ("gt7d", "older than 7 days"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> QuerySet[DeadLetter]:
        value = self.value() or ""
        if value[2:] not in self.windows or value[:2] not in ("lt", "gt"):
            return queryset  # no filter, or one typed by hand that we don't offer: show all
        cutoff = timezone.now() - self.windows[value[2:]]
        return (
            queryset.filter(created_at__gte=cutoff)
            if value.startswith("lt")
            else queryset.filter(created_at__lt=cutoff)
        )


class FingerprintFilter(admin.SimpleListFilter):
    """Filter by fingerprint: the grouped view links here (?fingerprint=...)."""

    title = "fingerprint"
    parameter_name = "fingerprint"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            (g["fingerprint"], f"{g['task_name']} ({g['count']})") for g in dead_letters.open_groups()[:20]
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> QuerySet[DeadLetter]:
        return queryset.filter(fingerprint=self.value()) if self.value() else queryset


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin[DeadLetter]):
    list_display = [
        "id",
        "task_name",
        "error",
        "reason",
        "attempts",
        "status",
        "group",
        "created_at",
        "acted_by",
    ]
    list_filter = ["status", "reason", "task_name", FingerprintFilter, AgeFilter]
    search_fields = ["task_name", "exception_class", "message", "fingerprint", "=task_id", "=root_id"]
    date_hierarchy = "created_at"
    actions = ["replay", "resolve", "discard"]
    readonly_fields = [f.name for f in DeadLetter._meta.fields if f.name != "note"]
    fieldsets = [
        (None, {"fields": ["task_name", "task_id", "root_id", "queue", "status", "reason", "attempts"]}),
        (
            "Failure",
            {"fields": ["exception_class", "message", "fingerprint", "first_failed_at", "last_failed_at"]},
        ),
        ("Arguments (IDs only)", {"fields": ["args", "kwargs", "headers"]}),
        ("Review", {"fields": ["acted_by", "acted_at", "replay_task_id", "note"]}),
        ("Traceback", {"classes": ["collapse"], "fields": ["traceback"]}),
    ]

    @admin.display(description="error")
    def error(self, obj: DeadLetter) -> str:
        return f"{obj.exception_class.rsplit('.', 1)[-1]}: {obj.message[:80]}"

    @admin.display(description="group", ordering="fingerprint")
    def group(self, obj: DeadLetter) -> str:
        url = reverse("admin:jobs_deadletter_changelist") + f"?fingerprint={obj.fingerprint}"
        return format_html('<a href="{}">{}</a>', url, obj.fingerprint)

    # --- permissions: staff may look; acting needs jobs.act_on_deadletter ------------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # dead letters are written by workers only

    def has_delete_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return False  # discard instead: the row stays as the audit trail

    def has_act_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ACT_PERMISSION)

    # --- actions ----------------------------------------------------------------
    def _with_note(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter], action: str, verb: str
    ) -> NoteForm | TemplateResponse:
        """Returns the submitted note form, or the intermediate page asking for a note."""
        return confirmed(self, request, queryset, action, verb, "admin/jobs/deadletter/action_note.html")

    @admin.action(description="Replay selected (through the outbox)", permissions=["act"])
    def replay(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> TemplateResponse | None:
        form = self._with_note(request, queryset, "replay", "Replay")
        if isinstance(form, TemplateResponse):
            return form
        done = [
            dead_letters.dead_letter_replay(
                dead_letter_id=pk, actor=actor(request), note=form.cleaned_data["note"]
            )
            for pk in queryset.values_list("pk", flat=True)
        ]
        replayed = sum(1 for task_id in done if task_id)
        self.message_user(
            request, f"Replayed {replayed}; skipped {len(done) - replayed} not open.", messages.SUCCESS
        )
        return None

    def _close(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter], action: str, status: str, verb: str
    ) -> TemplateResponse | None:
        form = self._with_note(request, queryset, action, verb)
        if isinstance(form, TemplateResponse):
            return form
        closed = sum(
            1
            for pk in queryset.values_list("pk", flat=True)
            if dead_letters.dead_letter_close(
                dead_letter_id=pk,
                actor=actor(request),
                status=status,
                note=form.cleaned_data["note"],
            )
        )
        self.message_user(
            request, f"{verb}: {closed}; skipped {queryset.count() - closed} not open.", messages.SUCCESS
        )
        return None

    @admin.action(description="Resolve selected (fixed by hand)", permissions=["act"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> TemplateResponse | None:
        return self._close(request, queryset, "resolve", DeadLetter.Status.RESOLVED, "Resolved")

    @admin.action(description="Discard selected (not worth doing)", permissions=["act"])
    def discard(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> TemplateResponse | None:
        return self._close(request, queryset, "discard", DeadLetter.Status.DISCARDED, "Discarded")

    # --- grouped view ---------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        return [
            path("groups/", self.admin_site.admin_view(self.groups_view), name="jobs_deadletter_groups"),
            path(
                "groups/<str:fingerprint>/replay/",
                self.admin_site.admin_view(self.replay_group_view),
                name="jobs_deadletter_replay_group",
            ),
            *super().get_urls(),
        ]

    def groups_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        groups = list(dead_letters.open_groups())
        samples = DeadLetter.objects.in_bulk([g["sample_id"] for g in groups])
        for group in groups:
            group["sample"] = samples.get(group["sample_id"])
            group["list_url"] = (
                reverse("admin:jobs_deadletter_changelist")
                + f"?status__exact=open&fingerprint={group['fingerprint']}"
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Open dead letters by fingerprint",
            "groups": groups,
            "can_act": self.has_act_permission(request),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/jobs/deadletter/groups.html", context)

    def replay_group_view(self, request: HttpRequest, fingerprint: str) -> HttpResponse:
        if request.method != "POST" or not self.has_act_permission(request):
            raise PermissionDenied
        ids = list(
            DeadLetter.objects.filter(fingerprint=fingerprint, status=DeadLetter.Status.OPEN).values_list(
                "pk", flat=True
            )
        )
        note = request.POST.get("note", "")[:2000]
        replayed = sum(
            1
            for pk in ids
            if dead_letters.dead_letter_replay(dead_letter_id=pk, actor=actor(request), note=note)
        )
        self.message_user(
            request, f"Replayed {replayed} dead letter(s) of group {fingerprint}.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:jobs_deadletter_groups"))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = {**(extra_context or {}), "groups_url": reverse("admin:jobs_deadletter_groups")}
        return super().changelist_view(request, extra_context)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "task_name", "queue", "not_before", "sent_at", "publish_attempts", "last_error"]
    list_filter = ["queue", "task_name", ("sent_at", admin.EmptyFieldListFilter)]
    search_fields = ["=id", "task_name", "dedupe_key"]
    ordering = ["-created_at"]


@admin.register(TaskRun)
class TaskRunAdmin(ReadOnlyAdmin):
    list_display = [
        "task_id",
        "task_name",
        "state",
        "attempt",
        "deliveries",
        "worker",
        "started_at",
        "finished_at",
    ]
    list_filter = ["state", "task_name", "queue"]
    search_fields = ["=task_id", "=root_id", "task_name"]
    ordering = ["-started_at"]


@admin.register(Job)
class JobAdmin(ActAdmin):
    list_display = [
        "id",
        "owner",
        "kind",
        "state",
        "progress",
        "created_at",
        "finished_at",
        "cancel_requested_at",
    ]
    list_filter = ["state", "kind"]
    search_fields = ["=id", "=task_id"]
    actions = [cancel_jobs]


class DuplicatesFilter(admin.SimpleListFilter):
    title = "duplicates refused"
    parameter_name = "duplicates"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "some"), ("no", "none")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ScheduleSlot]) -> QuerySet[ScheduleSlot]:
        if self.value() == "yes":
            return queryset.filter(skipped_count__gt=0)
        if self.value() == "no":
            return queryset.filter(skipped_count=0)
        return queryset


@admin.register(ScheduleSlot)
class ScheduleSlotAdmin(ReadOnlyAdmin):
    """The beat slot ledger: one row per schedule and slot; duplicates refused are counted."""

    list_display = [
        "schedule",
        "slot_start",
        "status",
        "attempts",
        "skipped_count",
        "duration",
        "started_at",
        "finished_at",
        "short_error",
        "note",
    ]
    list_filter = ["schedule", "status", DuplicatesFilter]
    search_fields = ["schedule", "=task_id", "=root_id", "error"]
    date_hierarchy = "slot_start"
    ordering = ["-slot_start"]

    @admin.display(description="error")
    def short_error(self, obj: ScheduleSlot) -> str:
        return obj.error[:100]
