"""The admin site, with login lockouts shared with the token endpoint (core/login_guard.py).

Failures count per client address (core/client_ip.py: the real client behind the ingress,
not the ingress) and per username; a locked-out login gets a 429 until the window ends.
"""

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest, HttpResponse

from core.login_guard import LoginGuard


class TaskyardAdminSite(admin.AdminSite):
    site_header = "taskyard admin"
    site_title = "taskyard"

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method != "POST":
            return super().login(request, extra_context)
        guard = LoginGuard(request, str(request.POST.get("username", ""))[:150])
        if (wait := guard.locked_for()) is not None:
            return HttpResponse(
                f"Too many failed logins. Try again in {wait // 60} minutes.",
                status=429,
                content_type="text/plain",
                headers={"Retry-After": str(wait)},
            )
        response = super().login(request, extra_context)
        if response.status_code == 302:  # a successful login redirects
            guard.succeeded()
        else:
            guard.failed()
        return response


class TaskyardAdminConfig(AdminConfig):
    default_site = "core.admin_site.TaskyardAdminSite"
