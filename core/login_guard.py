"""Failed logins are counted per client address and per username, for the token endpoint and
the admin together, so a password guesser gains nothing by switching between them.

    guard = LoginGuard(request, username)
    if (wait := guard.locked_for()) is not None: -> 429 with Retry-After
    ... authenticate ...
    guard.failed() / guard.succeeded()

* LOGIN_MAX_FAILURES_PER_ADDRESS (5) failures from one client address (core/client_ip.py)
  lock that address out for LOGIN_LOCKOUT_SECONDS: an attacker locks only itself out.
* LOGIN_MAX_FAILURES_PER_USERNAME (20) failures for one username, from any addresses, lock
  that username: guessing one account from many addresses is slowed to 20 tries per window.
  The bar is higher than the address's, so one address alone cannot lock a staff member out.
* A successful login clears both counters.
Counters live in the cache (Redis), shared by every web process. Usernames are hashed in the
keys. When Redis is down the guard fails open, like the throttles: logins still work, and the
outage is logged.
"""

import hashlib
import logging

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from redis.exceptions import RedisError

from core.client_ip import client_ip

logger = logging.getLogger(__name__)


class LoginGuard:
    def __init__(self, request: HttpRequest, username: str) -> None:
        name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
        self.limits = {
            f"login-fail:address:{client_ip(request)}": settings.LOGIN_MAX_FAILURES_PER_ADDRESS,
            f"login-fail:username:{name}": settings.LOGIN_MAX_FAILURES_PER_USERNAME,
        }

    def locked_for(self) -> int | None:
        """Seconds until the lockout ends, or None when this login may be tried."""
        try:
            counts = cache.get_many(list(self.limits))
        except RedisError:
            logger.warning("login guard: cache unavailable; login allowed without a lockout check")
            return None
        if any(counts.get(key, 0) >= limit for key, limit in self.limits.items()):
            return settings.LOGIN_LOCKOUT_SECONDS
        return None

    def failed(self) -> None:
        try:
            for key in self.limits:
                cache.add(key, 0, timeout=settings.LOGIN_LOCKOUT_SECONDS)  # the window starts now
                cache.incr(key)
        except (RedisError, ValueError):  # ValueError: the key expired between add and incr
            logger.warning("login guard: a failed login was not counted")

    def succeeded(self) -> None:
        try:
            cache.delete_many(list(self.limits))
        except RedisError:
            logger.warning("login guard: counters not cleared after a successful login")
