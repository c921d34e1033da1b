"""A local OTLP/HTTP trace collector: what `make run` and the tracing tests export to.

    POST /v1/traces   OTLP/HTTP protobuf (gzip or not), as every OpenTelemetry SDK sends it
    GET  /spans       the spans received so far, flattened to JSON (the tests read these)
    POST /reset       forget them

With `--spotlight URL` each process's part of a trace is also forwarded, as a Sentry
transaction, to Spotlight's sidecar (the trace viewer of `make run`, which shows the Sentry
error events of the same trace beside it; docs/adr/0005-tracing-through-the-outbox.md says why this
and not Jaeger). A part is a local root (a request, a task run, a relay publish: a span
without a parent in the same process) with everything under it.

Run: python -m fakes.otlp_collector --port 4318 [--spotlight http://127.0.0.1:8969/stream]
     --discard: answer every export and keep nothing (the benchmark's collector)
"""

import argparse
import gzip
import json
import threading
import time
import urllib.request
import uuid
from collections import deque
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from fakes.http import JsonServer, Request

KEEP_SPANS = 20_000
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
IS_REMOTE = 0x200  # SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK: the parent lives in another process
PENDING_SECONDS = 120.0  # a child whose local root never arrives is dropped after this


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def attributes_of(pairs: Any) -> dict[str, Any]:
    return {pair.key: value_of(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def span_dict(resource: dict[str, Any], scope: str, span: Any) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "parent_is_remote": bool(span.flags & IS_REMOTE),
        "name": span.name,
        "kind": KINDS.get(span.kind, str(span.kind)),
        "service": resource.get("service.name", ""),
        "scope": scope,
        "start": span.start_time_unix_nano / 1e9,
        "end": span.end_time_unix_nano / 1e9,
        "attributes": attributes_of(span.attributes),
        "status": {"code": span.status.code, "message": span.status.message},
        "events": [{"name": e.name, "attributes": attributes_of(e.attributes)} for e in span.events],
        "links": [
            {
                "trace_id": lk.trace_id.hex(),
                "span_id": lk.span_id.hex(),
                "attributes": attributes_of(lk.attributes),
            }
            for lk in span.links
        ],
    }


def flatten(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    return [
        span_dict(attributes_of(resource_spans.resource.attributes), scope_spans.scope.name, span)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


# --- Spotlight: a process's part of a trace as a Sentry transaction -----------------------
def _op(span: dict[str, Any]) -> str:
    attributes = span["attributes"]
    if "db.system" in attributes or "db.system.name" in attributes:
        return "db"
    if span["kind"] == "server":
        return "http.server"
    if span["kind"] == "client":
        return (
            "http.client"
            if any(k.startswith("http.") for k in attributes)
            else str(attributes.get("network.protocol.name", "client"))
        )
    return {"producer": "queue.publish", "consumer": "queue.process"}.get(span["kind"], "function")


def _sentry_span(span: dict[str, Any]) -> dict[str, Any]:
    return {
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
        "parent_span_id": span["parent_span_id"] or None,
        "op": _op(span),
        "description": span["name"],
        "start_timestamp": span["start"],
        "timestamp": span["end"],
        "status": "internal_error" if span["status"]["code"] == 2 else "ok",
        "data": span["attributes"],
    }


def transaction(root: dict[str, Any], children: list[dict[str, Any]]) -> dict[str, Any]:
    trace_context = _sentry_span(root)
    trace_context.pop("description")
    return {
        "event_id": uuid.uuid4().hex,
        "type": "transaction",
        "platform": "python",
        "transaction": root["name"],
        "start_timestamp": root["start"],
        "timestamp": root["end"],
        "server_name": root["service"],
        "tags": {"service": root["service"]},
        "contexts": {"trace": {k: v for k, v in trace_context.items() if v is not None}},
        "spans": [_sentry_span(child) for child in children],
        "sdk": {"name": "taskyard.otlp-collector", "version": "1.0.0"},
    }


def envelope(event: dict[str, Any]) -> bytes:
    header = {"event_id": event["event_id"], "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    lines = [header, {"type": event["type"], "content_type": "application/json"}, event]
    return b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"


def is_local_root(span: dict[str, Any]) -> bool:
    return not span["parent_span_id"] or span["parent_is_remote"] or span["kind"] in ("server", "consumer")


class SpotlightForwarder:
    def __init__(self, url: str) -> None:
        self.url = url
        self.pending: dict[str, dict[str, Any]] = {}  # span id -> span not yet sent
        self.lock = threading.Lock()
        self.warned = False

    def add(self, spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Hold the spans until their local root arrives; returns the transactions it completed."""
        ready = []
        with self.lock:
            for span in spans:
                span["received"] = time.monotonic()
                self.pending[span["span_id"]] = span
            for span in spans:
                if is_local_root(span):
                    ready.append(transaction(span, self._take_children(span)))
                    self.pending.pop(span["span_id"], None)
            cutoff = time.monotonic() - PENDING_SECONDS
            self.pending = {k: v for k, v in self.pending.items() if v["received"] > cutoff}
        for event in ready:
            self._send(event)
        return ready

    def _take_children(self, root: dict[str, Any]) -> list[dict[str, Any]]:
        found, frontier = [], {root["span_id"]}
        while frontier:
            children = [
                s
                for s in self.pending.values()
                if s["parent_span_id"] in frontier
                and not is_local_root(s)
                and s["service"] == root["service"]
            ]
            for child in children:
                del self.pending[child["span_id"]]
            found += children
            frontier = {c["span_id"] for c in children}
        return found

    def _send(self, event: dict[str, Any]) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"the Spotlight URL must be http(s): {self.url}")
        request = urllib.request.Request(  # noqa: S310 - http(s) checked above
            self.url, data=envelope(event), headers={"Content-Type": "application/x-sentry-envelope"}
        )
        try:
            urllib.request.urlopen(request, timeout=5).close()  # noqa: S310 - http(s) checked above
        except OSError as exc:
            if not self.warned:
                print(
                    f"otlp collector: Spotlight at {self.url} not reachable ({exc}); still collecting",
                    flush=True,
                )
                self.warned = True


class Collector:
    def __init__(self, spotlight: str | None = None, *, discard: bool = False) -> None:
        self.spans: deque[dict[str, Any]] = deque(maxlen=KEEP_SPANS)
        self.forwarder = SpotlightForwarder(spotlight) if spotlight else None
        self.discard = discard

    def receive(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        if self.discard:
            return 200, b"", {"Content-Type": "application/x-protobuf"}
        body = request.body
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if "json" in (request.headers.get("Content-Type") or ""):
            return 415, {"error": "send OTLP/HTTP protobuf"}, {}
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        spans = flatten(message)
        self.spans.extend(spans)
        if self.forwarder is not None:
            self.forwarder.add([dict(span) for span in spans])
        response = ExportTraceServiceResponse().SerializeToString()
        return 200, response, {"Content-Type": "application/x-protobuf"}

    def routes(self) -> dict[tuple[str, str], Any]:
        return {
            ("POST", "/v1/traces"): self.receive,
            ("GET", "/spans"): lambda _: (200, list(self.spans), {}),
            ("POST", "/reset"): self.reset,
        }

    def reset(self, _: Request) -> tuple[int, Any, dict[str, str]]:
        self.spans.clear()
        return 200, {"ok": True}, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--spotlight", default="", help="Spotlight sidecar's /stream URL to forward to")
    parser.add_argument("--discard", action="store_true", help="keep nothing (benchmarks)")
    args = parser.parse_args()
    collector = Collector(args.spotlight or None, discard=args.discard)
    server = JsonServer(args.host, args.port, collector.routes())
    server.serve_until_signalled(
        f"otlp collector: OTLP/HTTP on http://{args.host}:{server.port}/v1/traces"
        + (f", forwarding to {args.spotlight}" if args.spotlight else "")
    )


if __name__ == "__main__":
    main()
