"""The admin site, with a login lockout: repeated failures from one address are refused.

After ADMIN_LOGIN_MAX_FAILURES failed logins within ADMIN_LOGIN_LOCKOUT_SECONDS from one
client address (or for one username), further attempts get a 429 until the window ends.
Counters live in the cache (Redis), so every web process shares them.
"""

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse


def _keys(request: HttpRequest) -> list[str]:
    address = request.META.get("REMOTE_ADDR", "?")
    username = str(request.POST.get("username", ""))[:150].lower()
    return [f"admin-login-fail:ip:{address}", f"admin-login-fail:user:{username}"]


class TaskyardAdminSite(admin.AdminSite):
    site_header = "taskyard admin"
    site_title = "taskyard"

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method != "POST":
            return super().login(request, extra_context)
        keys = _keys(request)
        if any((cache.get(key) or 0) >= settings.ADMIN_LOGIN_MAX_FAILURES for key in keys):
            minutes = settings.ADMIN_LOGIN_LOCKOUT_SECONDS // 60
            return HttpResponse(
                f"Too many failed logins. Try again in {minutes} minutes.",
                status=429,
                content_type="text/plain",
                headers={"Retry-After": str(settings.ADMIN_LOGIN_LOCKOUT_SECONDS)},
            )
        response = super().login(request, extra_context)
        if response.status_code == 302:  # a successful login redirects
            cache.delete_many(keys)
        else:
            for key in keys:
                cache.add(key, 0, timeout=settings.ADMIN_LOGIN_LOCKOUT_SECONDS)
                cache.incr(key)
        return response


class TaskyardAdminConfig(AdminConfig):
    default_site = "core.admin_site.TaskyardAdminSite"
