"""Admin: KYC submissions with their documents (metadata only), vendor check ledger and audit trail.

Read-only: the machinery writes these rows. A failed check is retried by replaying its
dead letter (jobs admin), which reopens the submission.
"""

from django.contrib import admin
from django.http import HttpRequest

from core.admin import ReadOnlyAdmin
from kyc.models import Document, Submission, SubmissionEvent, VendorAttempt, VendorCheck


class DocumentInline(admin.TabularInline[Document, Submission]):
    model = Document
    extra = 0
    can_delete = False
    fields = (
        "position",
        "kind",
        "size",
        "width",
        "height",
        "sha256",
        "purged_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Submission | None = None) -> bool:
        return False


class SubmissionEventInline(admin.TabularInline[SubmissionEvent, Submission]):
    model = SubmissionEvent
    extra = 0
    can_delete = False
    fields = (
        "at",
        "kind",
        "task_id",
        "detail",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Submission | None = None) -> bool:
        return False


@admin.register(Submission)
class SubmissionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "owner",
        "document_type",
        "status",
        "created_at",
        "decided_at",
        "documents_purged_at",
    ]
    list_filter = ["status", "document_type", ("documents_purged_at", admin.EmptyFieldListFilter)]
    search_fields = ["=id", "owner__username"]
    ordering = ["-created_at"]
    inlines = [DocumentInline, SubmissionEventInline]


class VendorAttemptInline(admin.TabularInline[VendorAttempt, VendorCheck]):
    model = VendorAttempt
    extra = 0
    can_delete = False
    fields = (
        "started_at",
        "kind",
        "outcome",
        "status_code",
        "duration_ms",
        "task_id",
        "error",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: VendorCheck | None = None) -> bool:
        return False


@admin.register(VendorCheck)
class VendorCheckAdmin(ReadOnlyAdmin):
    list_display = [
        "submission",
        "status",
        "vendor_check_id",
        "submit_attempts",
        "polls",
        "decision",
        "decided_at",
    ]
    list_filter = ["status", "decision"]
    search_fields = ["=submission__id", "vendor_check_id"]
    inlines = [VendorAttemptInline]
