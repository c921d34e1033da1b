"""What the jobs admins' actions share: who acted, and the page that confirms an action with a note."""

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse


def actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


class NoteForm(forms.Form):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), required=False, max_length=2000
    )


def confirmed(
    model_admin: admin.ModelAdmin[Any],
    request: HttpRequest,
    queryset: QuerySet[Any],
    action: str,
    verb: str,
    template: str = "admin/jobs/confirm_action.html",
) -> NoteForm | TemplateResponse:
    """The submitted note form, or the intermediate page asking to confirm (with a note)."""
    if "confirm" in request.POST:
        form = NoteForm(request.POST)
        if form.is_valid():
            return form
    plural = model_admin.model._meta.verbose_name_plural
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"{verb} {queryset.count()} {plural}",
        "verb": verb,
        "noun": plural,
        "queryset": queryset,
        "form": NoteForm(),
        "action": action,
        "opts": model_admin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, template, context)
