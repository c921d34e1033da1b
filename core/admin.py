"""Admin helpers shared by every app, and the admin of core's own model."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from core.models import IdempotencyKey


class ReadOnlyAdmin(admin.ModelAdmin[Any]):
    """Records written by the machinery: look, don't touch."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ["user", "key", "method", "path", "status_code", "created_at", "expires_at"]
    search_fields = ["key"]
    exclude = ["response_body"]  # may hold personal data of the response
