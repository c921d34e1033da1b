"""Payment provider fake: a real HTTP server (stdlib only) that captures payments.

    POST /captures        JSON {"reference": "TY-00000042", "amount": "19.98", "currency": "EUR"};
                          header Idempotency-Key (required). 201 {"id", "status": "captured",
                          "reference", "amount", "currency", "created_at"}. The same key again
                          returns the same capture (200, Idempotent-Replayed: true): never a second
                          charge. The same key with another body is 422 idempotency_key_reused.
    GET  /captures/<id>   the capture
    GET  /control         the current settings
    POST /control {...}   change any of them (tests and demos switch modes here):
         mode            "ok" | "down" (every call 503) | "decline" (every capture 402
                         card_declined: permanent) | "slow" (`slow_latency` more per call)
         latency         seconds added to every call
         retry_after     seconds sent in Retry-After with 503 and 429
         fail_captures   the next N captures fail with `fail_with`: a status code, or "timeout":
                         the capture IS made, but the answer comes `timeout_seconds` late (the
                         client gave up; its retry must get the same capture back, not a new one)
         decline         references always declined, whatever the mode (concurrent tests)
    GET  /stats           calls, captures made, captures per reference (a double charge shows as 2),
                          answers by status, calls per Idempotency-Key
    POST /reset           forget captures and counters; settings back to the command line's
    GET  /                the captures, as a page

Run: python -m fakes.payment_provider --port 8027 [--mode ok] [--latency 0.0]
"""

import html
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from fakes.http import ControlledFake, FaultSettings, JsonServer, Reply, Request, fake_arguments

MODES = ("ok", "down", "decline", "slow")


@dataclass
class Settings(FaultSettings):
    MODES = MODES

    fail_captures: int = 0
    decline: list[str] = field(default_factory=list)


@dataclass
class Capture:
    id: str
    key: str
    reference: str
    amount: str
    currency: str
    created_at: str

    def view(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "key"} | {"status": "captured"}


class Provider(ControlledFake):
    settings: Settings

    def forget(self) -> None:
        self.captures: dict[str, Capture] = {}
        self.by_key: dict[str, str] = {}
        self.calls = 0
        self.calls_by_key: dict[str, int] = {}

    def _failure(self, reference: str) -> Reply | None:
        """The answer of a failure mode, if one applies to this call (after the latency)."""
        s = self.settings
        self.pause()
        failing = self.scripted_failure("fail_captures", timeout=False)
        if failing or s.mode == "down":
            status = int(s.fail_with) if failing else 503
            headers = {"Retry-After": f"{s.retry_after:g}"} if status in (429, 503) else {}
            return self.answer(status, {"error": "unavailable"}, headers)
        if s.mode == "decline" or reference in s.decline:
            return self.answer(402, {"error": "card_declined"})
        return None

    def capture(self, request: Request) -> Reply:
        key = request.headers.get("Idempotency-Key", "")
        with self.lock:
            self.calls += 1
            self.calls_by_key[key] = self.calls_by_key.get(key, 0) + 1
        try:
            body = request.json()
            reference, amount, currency = str(body["reference"]), str(body["amount"]), str(body["currency"])
        except (ValueError, KeyError, TypeError):
            return self.answer(400, {"error": "invalid_request"})
        if failure := self._failure(reference):
            return failure
        if not key:
            return self.answer(400, {"error": "idempotency_key_required"})
        with self.lock:
            existing = self.captures.get(self.by_key.get(key, ""))
            if existing is None:
                made = Capture(
                    id=f"cap_{uuid.uuid4().hex[:16]}",
                    key=key,
                    reference=reference,
                    amount=amount,
                    currency=currency,
                    created_at=datetime.now(UTC).isoformat(),
                )
                self.captures[made.id] = made
                self.by_key[key] = made.id
        if existing is not None:
            if (existing.reference, existing.amount, existing.currency) != (reference, amount, currency):
                return self.answer(422, {"error": "idempotency_key_reused"})
            return self.answer(200, existing.view(), {"Idempotent-Replayed": "true"})
        if self.scripted_failure("fail_captures", timeout=True):
            time.sleep(self.settings.timeout_seconds)  # captured, but the answer comes too late
        return self.answer(201, made.view(), {"Location": f"/captures/{made.id}"})

    def read(self, request: Request) -> Reply:
        found = self.captures.get(request.path.rsplit("/", 1)[-1])
        return (200, found.view(), {}) if found else (404, {"error": "capture_not_found"}, {})

    def stats(self, _: Request) -> Reply:
        with self.lock:
            per_reference: dict[str, int] = {}
            for made in self.captures.values():
                per_reference[made.reference] = per_reference.get(made.reference, 0) + 1
            return (
                200,
                {
                    "calls": self.calls,
                    "captures": len(self.captures),
                    "captures_by_reference": per_reference,
                    "calls_by_key": dict(self.calls_by_key),
                    "responses": dict(self.responses),
                },
                {},
            )

    def page(self, _: Request) -> Reply:
        with self.lock:
            rows = "".join(
                f"<tr><td>{html.escape(c.created_at)}</td><td>{html.escape(c.reference)}</td>"
                f"<td>{html.escape(c.amount)} {html.escape(c.currency)}</td><td>{html.escape(c.id)}</td></tr>"
                for c in sorted(self.captures.values(), key=lambda c: c.created_at, reverse=True)
            )
            mode = html.escape(self.settings.mode)
        page = (
            f"<!doctype html><title>payment provider (fake)</title><h1>Captures</h1><p>mode: {mode}</p>"
            f"<table><tr><th>at</th><th>reference</th><th>amount</th><th>id</th></tr>{rows}</table>"
        )
        return 200, page, {}


def build_server(provider: Provider, host: str, port: int) -> JsonServer:
    return JsonServer(
        host,
        port,
        {
            ("POST", "/captures"): provider.capture,
            ("GET", "/captures/*"): provider.read,
            ("GET", "/stats"): provider.stats,
            ("GET", "/"): provider.page,
            **provider.control_routes(),
        },
    )


def main() -> None:
    parser = fake_arguments(__doc__, "PAYMENT_PROVIDER", 8027, MODES)
    args = parser.parse_args()
    server = build_server(Provider(Settings(mode=args.mode, latency=args.latency)), args.host, args.port)
    server.serve_until_signalled(f"payment provider: http://{args.host}:{server.port}  mode {args.mode}")


if __name__ == "__main__":
    main()
