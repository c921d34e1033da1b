"""Request bodies are capped before anything reads them.

Every view accepts at most API_MAX_BODY_BYTES (32 KB; the largest valid order is about
12 KB). A view that takes uploads declares its own cap as a `body_limit` attribute: an int
or a function returning one (the KYC upload: every file at its limit plus the form fields),
and streams what it accepts (kyc/documents.py). The check reads only the Content-Length
header, after URL resolution and before the view, authentication or the CSRF check touch the
body: an oversized body is refused with 413 problem+json without a byte of it in memory. A
body without a Content-Length (chunked) is never read by Django's WSGI handler at all.
A query string with a NUL byte is refused too (400): no database text column takes one.

The same limits hold at the edge: the Kubernetes ingress allows large bodies on the upload
path only (deploy/k8s/overlays/example/ingress.yaml).
"""

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from core.problems import problem_response


def body_limit_of(view_func: Callable[..., Any]) -> int:
    """The view's declared cap (DRF views carry their class as `cls`), else the API's."""
    declared = getattr(getattr(view_func, "cls", view_func), "body_limit", None)
    if callable(declared):
        declared = declared()
    return int(declared) if declared is not None else settings.API_MAX_BODY_BYTES


class BodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in unquote(request.META.get("QUERY_STRING", "")):
            # No text column takes a NUL byte: PostgreSQL would fail the query (admin search).
            return problem_response(400, "bad-request", "Bad request", "The query string holds a NUL byte.")
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Callable[..., Any], view_args: Any, view_kwargs: Any
    ) -> HttpResponse | None:
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return problem_response(400, "bad-content-length", "Bad Content-Length", "It must be a number.")
        limit = body_limit_of(view_func)
        if length > limit:
            return problem_response(
                413, "body-too-large", "Request body too large", f"This endpoint reads at most {limit} bytes."
            )
        return None
