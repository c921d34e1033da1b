from django.contrib import admin

from core.admin import ReadOnlyAdmin
from notifications.models import EmailAttempt, EmailDelivery


class EmailAttemptInline(admin.TabularInline[EmailAttempt, EmailDelivery]):
    model = EmailAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["task_id", "outcome", "smtp_code", "error", "started_at", "duration_ms"]


@admin.register(EmailDelivery)
class EmailDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["id", "template", "ledger_key", "status", "attempts", "sent_at", "message_id"]
    list_filter = ["status", "template"]
    search_fields = ["ledger_key", "message_id"]
    inlines = [EmailAttemptInline]
