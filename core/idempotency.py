"""HTTP Idempotency-Key for POSTs that create something.

    class OrderCreateApi(APIView):
        @idempotent
        def post(self, request): ...

Same user + key + same request  -> the first response (status, body, Location) again,
                                   with `Idempotent-Replayed: true`; nothing is created.
Same user + key + other request -> 422 problem `idempotency-key-reused`.
Concurrent first requests       -> one resource: the view runs inside one transaction
                                   that starts by INSERTing the key; a second request's
                                   INSERT waits on the unique index until the first
                                   commits, then replays its response. If the first fails
                                   (4xx/5xx), its key row rolls back with everything else
                                   and the client may retry with the same key.
Keys expire after IDEMPOTENCY_KEY_TTL_HOURS and are purged by the `jobs.purge_idempotency_keys` task.
The header is optional; without it a POST is not deduplicated.
"""

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from core.models import IdempotencyKey
from core.problems import ApplicationError
from core.users import request_user

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
REPLAYED_RESPONSE_HEADERS = ("Location",)

View = Callable[..., Response]


class IdempotencyKeyReused(ApplicationError):
    status_code = 422
    code = "idempotency-key-reused"
    title = "Idempotency-Key was already used with a different request"


class IdempotencyKeyInvalid(ApplicationError):
    status_code = 400
    code = "idempotency-key-invalid"
    title = "Idempotency-Key header is invalid"


def _digest_value(value: Any) -> Any:
    if isinstance(value, UploadedFile):
        digest = hashlib.sha256()
        for chunk in value.chunks():
            digest.update(chunk)
        value.seek(0)
        return {"file": value.name, "size": value.size, "sha256": digest.hexdigest()}
    return value


def request_fingerprint(request: Request) -> str:
    """A hash of what the request asks for: method, path, and the parsed body (files by content)."""
    data = request.data
    if hasattr(data, "lists"):  # QueryDict (multipart/form)
        body: Any = sorted((k, [_digest_value(v) for v in values]) for k, values in data.lists())
    else:
        body = data
    canonical = json.dumps([request.method, request.path, body], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(stored: IdempotencyKey) -> Response:
    headers = {**stored.response_headers, REPLAYED_HEADER: "true"}
    return Response(stored.response_body, status=stored.status_code, headers=headers)


def idempotent(view: View) -> View:
    @wraps(view)
    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return view(self, request, *args, **kwargs)
        if not (0 < len(key) <= MAX_KEY_LENGTH) or not key.isprintable() or not key.isascii():
            raise IdempotencyKeyInvalid(f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters.")
        user = request_user(request)
        fingerprint = request_fingerprint(request)
        now = timezone.now()
        with transaction.atomic():
            IdempotencyKey.objects.filter(user=user, key=key, expires_at__lte=now).delete()
            # INSERT ... ON CONFLICT DO NOTHING: blocks while a concurrent request holds the key.
            IdempotencyKey.objects.bulk_create(
                [
                    IdempotencyKey(
                        user=user,
                        key=key,
                        request_hash=fingerprint,
                        method=request.method or "",
                        path=request.path[:300],
                        status_code=0,
                        response_body={},
                        expires_at=now + timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS),
                    )
                ],
                ignore_conflicts=True,
            )
            stored = IdempotencyKey.objects.select_for_update().get(user=user, key=key)
            # status_code 0 = the row we just inserted: a committed row always holds a response,
            # because a failed request's row rolls back with it.
            if stored.status_code:
                if stored.request_hash != fingerprint:
                    raise IdempotencyKeyReused(
                        f"This {HEADER} was used for a different request; use a new key for a new request."
                    )
                return _replay(stored)
            response = view(self, request, *args, **kwargs)
            if 200 <= response.status_code < 300:
                stored.status_code = response.status_code
                stored.response_body = response.data
                stored.response_headers = {
                    h: response[h] for h in REPLAYED_RESPONSE_HEADERS if response.has_header(h)
                }
                stored.save(update_fields=["status_code", "response_body", "response_headers"])
            else:
                transaction.set_rollback(True)  # no key stored for a failed request
            return response

    return wrapper
