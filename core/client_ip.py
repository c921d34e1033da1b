"""Who the client is, by address: X-Forwarded-For only through the proxies we run.

Each proxy in front of the web process appends the address it received the request from to
X-Forwarded-For, so only the last TRUSTED_PROXY_HOPS entries were written by someone we
trust; anything to their left is whatever the client sent. The client's address is the entry
that many hops from the right. With 0 hops (no proxy: `make run`) the header is ignored.
Throttles (core/throttling.py) and login lockouts (core/login_guard.py) key on this, so a
client rotating the header keeps its identity. DRF's own reading is set to the same
(REST_FRAMEWORK["NUM_PROXIES"]).
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    remote = str(request.META.get("REMOTE_ADDR") or "")
    hops = settings.TRUSTED_PROXY_HOPS
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR") or "")
    if hops <= 0 or not forwarded:
        return remote
    entries = [entry.strip() for entry in forwarded.split(",")]
    candidate = entries[-min(hops, len(entries))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:  # our own proxy wrote garbage: don't key on it
        return remote
