"""OpenAPI generation (drf-spectacular): the published schema is the API's contract.

Every view nests its own `InputSerializer` / `OutputSerializer` (HackSoft style), so
the class names repeat; components are named after the view instead:
`OrderCollectionApi.InputSerializer` -> `OrderCollectionInput`.

What a view declares (its 2xx responses, its request body, the domain errors it raises with
`@raises(...)`) is completed here, once, with every error it can answer, as the shared
`Problem` component (`application/problem+json`, core/problems.py):

    400  a request body, query or header parameter to validate
    401  authentication required (every operation but the token exchange)
    403  an unsafe method with a session cookie and no CSRF token
    404  an object id in the path
    406  an Accept header that excludes JSON
    413  a request body larger than the server reads (unsafe methods)
    415  a request body in another media type than the documented ones
    422  an Idempotency-Key reused for a different request
    429  throttled, with Retry-After
    500  the server failed; the details go to logs and Sentry

Every list response (a `many=True` response serializer) is documented as the
`core/pagination.py` envelope with its `limit` and `offset` parameters.
"""

from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import uritemplate
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.pagination import BasePagination
from rest_framework.permissions import AllowAny

from core.idempotency import HEADER as IDEMPOTENCY_HEADER
from core.idempotency import MAX_KEY_LENGTH
from core.pagination import Pagination
from core.problems import PROBLEM_CONTENT_TYPE, ApplicationError

F = TypeVar("F", bound=Callable[..., Any])
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
MAX_ID = 2**63 - 1
STATUS_MEANING = {
    400: "The request is invalid; `errors` names each field (dotted path) with its messages.",
    401: "Authentication required: send `Authorization: Token <key>` (POST /api/auth/token).",
    403: "Forbidden: a session-cookie request without a valid CSRF token.",
    404: "No such object for this user (another user's object is indistinguishable from none).",
    406: "The Accept header excludes application/json.",
    409: "The object's current state does not allow this.",
    413: "The request body is larger than the server reads.",
    415: "The request body is not in a media type this operation accepts.",
    422: "The Idempotency-Key was already used for a different request.",
    429: "Too many requests; retry after the number of seconds in Retry-After.",
    500: "The server failed; nothing was saved. The details are in the server's logs.",
    503: "The database is unreachable for the moment; nothing was saved. Retry after Retry-After seconds.",
}
URI_TOO_LONG = (
    "The URL is longer than the HTTP server reads (gunicorn: 4,094 bytes for the request line); "
    "refused before the API sees it, so the body is the server's own, not problem+json."
)


IDEMPOTENCY_KEY = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[!-~]([ -~]*[!-~])?$"},
    OpenApiParameter.HEADER,
    required=False,
    description="Printable ASCII. The same key with the same request replays the first response "
    "(`Idempotent-Replayed: true`); with another request it is a 422.",
)


def location(status: int, description: str) -> OpenApiParameter:
    """The Location header of a 201/202 response (the new resource, or where to poll it)."""
    return OpenApiParameter(
        "Location", str, OpenApiParameter.HEADER, response=[status], required=True, description=description
    )


class Problem(serializers.Serializer[Any]):
    """RFC 9457 problem details: the body of every error (core/problems.py)."""

    type = serializers.CharField(help_text="`urn:taskyard:problem:<code>`")
    title = serializers.CharField(help_text="A short summary of the problem type.")
    status = serializers.IntegerField(min_value=400, max_value=599, help_text="The HTTP status code.")
    detail = serializers.CharField(help_text="What happened in this request, for a person.")
    code = serializers.CharField(help_text="The stable, machine-readable name of the problem.")
    errors = serializers.DictField(  # type: ignore[assignment]  # a field named like Serializer.errors
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Field errors only: the field's dotted path (`lines.0.sku`) -> its messages.",
    )


def raises(*errors: type[ApplicationError]) -> Callable[[F], F]:
    """Documents the domain errors a view method raises (status and code) in its schema."""

    def mark(view_method: F) -> F:
        view_method._raises = (*getattr(view_method, "_raises", ()), *errors)  # type: ignore[attr-defined]
        return view_method

    return mark


class AutoSchema(SpectacularAutoSchema):
    def get_serializer_name(self, serializer: serializers.Serializer[Any], direction: Any) -> str:
        owner, _, name = type(serializer).__qualname__.rpartition(".")
        if owner:
            return owner.removesuffix("Api") + name
        return name

    def _get_paginator(self) -> BasePagination | None:
        return Pagination()  # consulted for list responses only: every list is paginated_response

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # drf-spectacular leaves out the item bounds of a nested `many=True` serializer.
        if isinstance(field, serializers.ListSerializer) and schema.get("type") == "array":
            if not field.allow_empty:
                schema.setdefault("minItems", 1)
            max_length = getattr(field, "max_length", None)  # set by DRF, not in its stubs
            if max_length is not None:
                schema.setdefault("maxItems", max_length)
        if isinstance(field, serializers.ListField) and not field.allow_empty:
            schema.setdefault("minItems", 1)
        return schema

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation: dict[str, Any] | None = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path" and parameter["schema"].get("type") == "integer":
                parameter["schema"].update(minimum=1, maximum=MAX_ID)  # bigint primary keys
        for status, codes in sorted(self._problems(operation).items()):
            operation["responses"].setdefault(str(status), self._problem_response(status, codes))
        # answered by the HTTP server (gunicorn, the ingress) before the API sees the request:
        # documented so a client expects it, with no body schema because it is not ours
        operation["responses"].setdefault("414", {"description": URI_TOO_LONG})
        return operation

    def _problems(self, operation: dict[str, Any]) -> dict[int, list[str]]:
        """Status -> problem codes this operation can answer with."""
        problems: dict[int, list[str]] = defaultdict(list)
        locations = {p["in"] for p in operation.get("parameters", [])}
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        body = "requestBody" in operation
        reads_body = body or IDEMPOTENCY_HEADER in headers  # the key's fingerprint reads the body
        if body or "query" in locations or headers:
            problems[400].append("validation-error")
        if body:
            problems[400].append("parse-error")
        if IDEMPOTENCY_HEADER in headers:
            problems[400].append("idempotency-key-invalid")
            problems[422].append("idempotency-key-reused")
        if not any(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            problems[401] += ["not-authenticated", "authentication-failed"]
            if self.method in UNSAFE and any(
                isinstance(a, SessionAuthentication) for a in self.view.get_authenticators()
            ):
                problems[403].append("permission-denied")
        if uritemplate.variables(self.path):
            problems[404].append("not-found")
        problems[406].append("not-acceptable")
        if self.method in UNSAFE:
            problems[413].append("body-too-large")
        if reads_body:
            problems[415].append("unsupported-media-type")
        if self.view.get_throttles():
            problems[429].append("throttled")
        problems[500].append("server-error")
        problems[503].append("database-unavailable")
        view_method = getattr(self.view, self.method.lower(), None)
        for error in getattr(view_method, "_raises", ()):
            problems[error.status_code].append(error.code)
        return problems

    def _problem_response(self, status: int, codes: list[str]) -> dict[str, Any]:
        meaning = STATUS_MEANING.get(status, "See `code` and `detail`.")
        names = ", ".join(f"`{code}`" for code in dict.fromkeys(codes))
        response: dict[str, Any] = self._get_response_for_code(
            OpenApiResponse(Problem, description=f"{meaning} Problem codes: {names}."),
            str(status),
            media_types=(PROBLEM_CONTENT_TYPE,),
        )
        if status in (429, 503):
            response["headers"] = {
                "Retry-After": {"schema": {"type": "integer", "minimum": 0}, "description": "Seconds."}
            }
        return response


def drop_slash_duplicates(
    endpoints: list[tuple[str, str, str, Any]], **_: Any
) -> list[tuple[str, str, str, Any]]:
    """/api/orders and /api/orders/ are one collection: document it once, with the slash."""
    paths = {path for path, *_ in endpoints}
    return [e for e in endpoints if not (not e[0].endswith("/") and f"{e[0]}/" in paths)]
