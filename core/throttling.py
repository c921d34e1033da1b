"""API throttles: one Redis token bucket per client and scope, keyed on the real client address,
failing open.

DRF's own throttles keep a list of every request's timestamp per client in the cache and read
and rewrite it whole on each request: at 6,000 requests a minute that is a pickled list of up to
6,000 floats, twice per call. Here each throttle is a token bucket (core/ratelimit.py): one
atomic script call, a few bytes of state. A rate of N per period allows N at once and refills
evenly, so over any period a client gets at most about 2N; the 429's Retry-After says when the
next request fits.

Anonymous clients are identified by core/client_ip.py (X-Forwarded-For only through the
trusted proxies), so rotating the header doesn't buy a fresh budget. An unreachable cache
(Redis down) must not turn every API call into a 500: the request is allowed and the outage
logged; availability of the API beats precise rate limits for the minutes Redis is away."""

import logging
from typing import Any

from redis.exceptions import RedisError
from rest_framework import throttling
from rest_framework.request import Request

from core.client_ip import client_ip
from core.ratelimit import TokenBucket

logger = logging.getLogger(__name__)


class BucketThrottle:
    """Replaces SimpleRateThrottle's history list with a token bucket; keeps its rates and keys."""

    _wait: float | None = None

    def get_ident(self, request: Request) -> str:
        """The client's address through the trusted proxies only (core/client_ip.py)."""
        return client_ip(request)

    def allow_request(self, request: Request, view: Any) -> bool:
        throttle: Any = self  # the SimpleRateThrottle this is mixed into
        if throttle.rate is None:
            return True
        key = throttle.get_cache_key(request, view)
        if key is None:
            return True
        bucket = TokenBucket(
            f"taskyard:throttle:{key}",
            capacity=throttle.num_requests,
            refill_per_second=throttle.num_requests / throttle.duration,
        )
        try:
            decision = bucket.take()
        except (RedisError, ConnectionError, OSError):
            logger.warning("throttle cache unavailable; request allowed without a rate check")
            return True
        self._wait = decision.wait_seconds
        return decision.allowed

    def wait(self) -> float | None:
        return self._wait


class AnonRateThrottle(BucketThrottle, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(BucketThrottle, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(BucketThrottle, throttling.ScopedRateThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        # DRF's scoped throttle finds its rate from the view before it counts.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)
