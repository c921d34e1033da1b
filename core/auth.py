"""Token authentication with the token's user kept in the process for a short while.

DRF's TokenAuthentication reads the token and its user from the database on every request: a
round trip and two model instances per call, the largest fixed cost of a small request (the
cost-per-order profile, docs/performance.md). Here a process keeps what it read for
AUTH_TOKEN_CACHE_SECONDS (30): a token maps to exactly one user, so a cached answer can never
be another user's. The price is revocation latency: a deleted token or a deactivated user is
refused at once by the process that made the change, and by every other process within the
TTL (docs/security.md). Set AUTH_TOKEN_CACHE_SECONDS=0 to read every time.
"""

import threading
import time
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

MAX_ENTRIES = 10_000  # tokens one process remembers; the least recently used go first

_entries: OrderedDict[str, tuple[float, User, Token]] = OrderedDict()
_lock = threading.Lock()


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        ttl = settings.AUTH_TOKEN_CACHE_SECONDS
        now = time.monotonic()
        with _lock:
            hit = _entries.get(key)
            if hit is not None and hit[0] > now:
                _entries.move_to_end(key)
                return hit[1], hit[2]
        user, token = super().authenticate_credentials(key)  # raises AuthenticationFailed
        if ttl > 0:
            with _lock:
                _entries[key] = (now + ttl, user, token)
                while len(_entries) > MAX_ENTRIES:
                    _entries.popitem(last=False)
        return user, token


def forget(*, key: str | None = None, user_id: int | None = None) -> None:
    with _lock:
        for cached in [k for k, (_, user, _) in _entries.items() if k == key or user.pk == user_id]:
            del _entries[cached]


@receiver(post_delete, sender=Token)
def _token_deleted(sender: Any, instance: Token, **_: Any) -> None:
    forget(key=instance.key)


@receiver(post_save, sender=User)
def _user_saved(sender: Any, instance: User, **_: Any) -> None:
    forget(user_id=instance.pk)  # deactivated, or a changed password: read again
