"""/metrics (Prometheus text format) and the HTTP request figures.

One scrape of a web process returns: the counters and histograms of every process on
this host that shares PROMETHEUS_MULTIPROC_DIR (gunicorn workers, Celery pool children,
the relay), plus the figures that registered collectors read at scrape time
(broker, outbox, dead letters: jobs; FX staleness: fx). Processes on
other hosts (a worker pod) expose their own via METRICS_EXPORTER_PORT (jobs/worker.py serves them).

Protected: a bearer token (METRICS_TOKEN) or a client address in METRICS_ALLOWED_IPS.
"""

import hmac
import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.problems import problem

logger = logging.getLogger("taskyard.http")

HTTP_REQUESTS = Counter(
    "taskyard_http_requests_total",
    "HTTP requests by route pattern and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "taskyard_http_request_duration_seconds",
    "HTTP request latency by route pattern.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class MetricsMiddleware:
    """Counts and times every request by its URL pattern (not its path: bounded labels)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = request.resolver_match
        route = (match.route or match.view_name) if match else "<unmatched>"
        method = request.method or "?"
        HTTP_REQUESTS.labels(method=method, route=route, status=str(response.status_code)).inc()
        HTTP_LATENCY.labels(method=method, route=route).observe(elapsed)
        logger.info("%s %s %s %.1fms", method, route, response.status_code, elapsed * 1000)
        return response


# Collectors that read state at scrape time (queues, outbox, dead letters, FX staleness).
# Apps register theirs in AppConfig.ready(); core knows none of them.
COLLECTORS: list[Callable[[], Collector]] = []


def register_collector(factory: Callable[[], Collector]) -> None:
    if factory not in COLLECTORS:
        COLLECTORS.append(factory)


def build_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    for factory in COLLECTORS:
        registry.register(factory())
    return registry


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    return request.META.get("REMOTE_ADDR") in settings.METRICS_ALLOWED_IPS


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        body = problem(403, "metrics-forbidden", "Metrics need a token or an allowed address")
        return JsonResponse(body, status=403, content_type="application/problem+json")
    return HttpResponse(generate_latest(build_registry()), content_type=CONTENT_TYPE_LATEST)
