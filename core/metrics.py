"""/metrics (Prometheus text format) and the HTTP request figures.

One scrape of a web process returns: the counters and histograms of every process on
this host that shares PROMETHEUS_MULTIPROC_DIR (gunicorn workers, Celery pool children,
the relay), plus the figures that registered collectors read at scrape time
(broker, outbox, dead letters: jobs; FX staleness: fx). Processes on
other hosts (a worker pod) expose their own via METRICS_EXPORTER_PORT (serve_exporter below: token required off loopback).

Protected: a bearer token (METRICS_TOKEN) or a client address in METRICS_ALLOWED_IPS.
"""

import hmac
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.problems import problem_response

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


def _has_token(header: str) -> bool:
    token = settings.METRICS_TOKEN
    return bool(token) and hmac.compare_digest(header.encode(), f"Bearer {token}".encode())


def _allowed(request: HttpRequest) -> bool:
    # REMOTE_ADDR, not the forwarded client: Prometheus scrapes pods directly, never via a proxy.
    return _has_token(request.headers.get("Authorization", "")) or (
        request.META.get("REMOTE_ADDR") in settings.METRICS_ALLOWED_IPS
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return problem_response(403, "metrics-forbidden", "Metrics need a token or an allowed address")
    return HttpResponse(generate_latest(build_registry()), content_type=CONTENT_TYPE_LATEST)


def serve_exporter() -> None:
    """On hosts without a web process (a worker or relay pod): this host's counters on
    METRICS_EXPORTER_PORT. Off the loopback interface it requires the metrics token; without a
    token configured it binds to 127.0.0.1 instead, and says so."""
    port, address = settings.METRICS_EXPORTER_PORT, settings.METRICS_EXPORTER_ADDRESS
    if not port:
        return
    if not ipaddress.ip_address(address).is_loopback and not settings.METRICS_TOKEN:
        logger.error("metrics exporter: no METRICS_TOKEN, so it listens on 127.0.0.1, not %s", address)
        address = "127.0.0.1"
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    exporter = make_wsgi_app(registry)

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if settings.METRICS_TOKEN and not _has_token(str(environ.get("HTTP_AUTHORIZATION", ""))):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"metrics need Authorization: Bearer <METRICS_TOKEN>\n"]
        return exporter(environ, start_response)

    server = make_server(address, port, guarded, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True).start()
    logger.info("metrics exporter on %s:%d", address, port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # a scrape every 15 s would flood the worker's log
