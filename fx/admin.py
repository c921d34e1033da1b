"""FX rates in the admin: read-only (the sync writes them)."""

from django.contrib import admin
from django.http import HttpRequest

from fx.models import FxRate


@admin.register(FxRate)
class FxRateAdmin(admin.ModelAdmin[FxRate]):
    list_display = ["base", "quote", "rate", "as_of", "source", "fetched_at"]
    list_filter = ["base", "quote", "source"]
    date_hierarchy = "as_of"
    ordering = ["-as_of", "base", "quote"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: FxRate | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: FxRate | None = None) -> bool:
        return False
