"""DRF throttles keyed on the real client address, failing open.

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

logger = logging.getLogger(__name__)


class FailOpenMixin:
    def get_ident(self, request: Request) -> str:
        """The client's address through the trusted proxies only (core/client_ip.py)."""
        return client_ip(request)

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return bool(super().allow_request(request, view))  # type: ignore[misc]
        except (RedisError, ConnectionError, OSError):
            logger.warning("throttle cache unavailable; request allowed without a rate check")
            return True


class AnonRateThrottle(FailOpenMixin, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(FailOpenMixin, throttling.ScopedRateThrottle):
    pass
