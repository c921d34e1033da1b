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
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import connection, transaction
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


# One statement: a new key's row (status 0: being answered), or an expired one's taken over.
# A key a concurrent request is answering makes this INSERT wait on the unique index until that
# request commits (then it conflicts: replay) or rolls back (then it inserts: our turn). A key
# with a committed, unexpired answer conflicts and returns nothing.
_CLAIM_SQL = """
INSERT INTO core_idempotencykey AS k
    (user_id, key, request_hash, method, path, status_code, response_body, response_headers,
     created_at, expires_at)
VALUES (%(user)s, %(key)s, %(hash)s, %(method)s, %(path)s, 0, '{}', '{}', now(),
        now() + make_interval(hours => %(ttl)s))
ON CONFLICT (user_id, key) DO UPDATE SET
    request_hash = EXCLUDED.request_hash, method = EXCLUDED.method, path = EXCLUDED.path,
    status_code = 0, response_body = '{}', response_headers = '{}', created_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE k.expires_at <= now()
RETURNING id
"""


def _claim(user_id: int, key: str, fingerprint: str, request: Request) -> int | None:
    """The id of the key's row, ours to answer; None when the key holds an answer already."""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "user": user_id,
                "key": key,
                "hash": fingerprint,
                "method": request.method or "",
                "path": request.path[:300],
                "ttl": settings.IDEMPOTENCY_KEY_TTL_HOURS,
            },
        )
        row = cursor.fetchone()
    return int(row[0]) if row else None


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
        with transaction.atomic():
            claimed = _claim(user.pk, key, fingerprint, request)
            if claimed is None:  # the key holds a committed response: replay it (or refuse)
                stored = IdempotencyKey.objects.get(user=user, key=key)
                if stored.request_hash != fingerprint:
                    raise IdempotencyKeyReused(
                        f"This {HEADER} was used for a different request; use a new key for a new request."
                    )
                return _replay(stored)
            response = view(self, request, *args, **kwargs)
            if 200 <= response.status_code < 300:
                IdempotencyKey.objects.filter(pk=claimed).update(
                    status_code=response.status_code,
                    response_body=response.data,
                    response_headers={
                        h: response[h] for h in REPLAYED_RESPONSE_HEADERS if response.has_header(h)
                    },
                )
            else:
                transaction.set_rollback(True)  # no key stored for a failed request
            return response

    return wrapper
