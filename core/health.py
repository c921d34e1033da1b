"""Probes. /healthz: the process answers. /readyz: its dependencies answer too.

Both are open (probes carry no credentials) and reveal only which dependency failed.
The database and Redis checks are core's own; other apps add theirs at start-up with
`register_check` (jobs adds the broker in JobsConfig.ready).
"""

import time
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from core.redis import redis_client


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    redis_client().ping()


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "redis": _check_redis,
}


def register_check(name: str, check: Callable[[], None]) -> None:
    """Add a readiness check: a callable that raises when its dependency does not answer."""
    CHECKS[name] = check


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the class is reported
            results[name] = {"ok": False, "error": type(exc).__name__}
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    ready = all(r["ok"] for r in results.values())
    failed = [name for name, r in results.items() if not r["ok"]]
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "failed": failed, "checks": results},
        status=200 if ready else 503,
    )
