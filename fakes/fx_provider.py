"""FX provider fake: a real HTTP server that answers like a small FX-rate API.

    GET  /v1/rates?base=EUR&symbols=USD,GBP
         200 {"base": "EUR", "as_of": "2026-01-31T09:41:00Z", "source": "fx-fake",
              "rates": {"USD": "1.0831207", "GBP": "0.85203349"}}
         400 for an unknown currency
    GET  /control        the current mode, latency, hang and retry_after
    POST /control {"mode": "ok" | "fail-5xx" | "fail-timeout" | "fail-4xx",
                   "latency": 0.2, "hang": 30, "retry_after": 0}      (every field optional)
         fail-5xx answers 503 (with Retry-After when retry_after is set), fail-4xx 401,
         fail-timeout holds the request `hang` seconds (longer than any client's read
         timeout) before answering; `latency` delays every answer
    GET  /stats          {"calls": n, "by_status": {"200": n, "503": n, "timeout": n}, "last_call_at": ...}
    POST /stats/reset

Rates are deterministic for a given minute: a fixed value per currency, moved by at most
0.5 % with the time of day, so consecutive syncs see small, plausible changes.

Run: python -m fakes.fx_provider --port 8026 [--mode ok] [--latency 0.0]
"""

import argparse
import math
import os
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fakes.http import JsonServer, Request

SOURCE = "fx-fake"
MODES = ("ok", "fail-5xx", "fail-timeout", "fail-4xx")
# US dollars per unit, roughly; the fake's only "market data".
USD_PER_UNIT = {
    "EUR": 1.085,
    "USD": 1.0,
    "GBP": 1.271,
    "CHF": 1.132,
    "JPY": 0.00668,
    "SEK": 0.0952,
    "NOK": 0.0931,
    "DKK": 0.1455,
    "PLN": 0.251,
    "CAD": 0.735,
}


def usd_value(currency: str, minute: int) -> float:
    """The currency's value in USD at a given minute (since the epoch): within 0.5 % of its base."""
    if currency == "USD":
        return 1.0
    phase = sorted(USD_PER_UNIT).index(currency)
    return USD_PER_UNIT[currency] * (1 + 0.005 * math.sin(2 * math.pi * minute / 1440 + phase))


def rate_table(base: str, symbols: list[str], at: datetime) -> dict[str, Any]:
    minute = int(at.timestamp() // 60)
    as_of = datetime.fromtimestamp(minute * 60, UTC)
    rates = {
        quote: str(Decimal(f"{usd_value(base, minute) / usd_value(quote, minute):.8g}"))
        for quote in symbols
        if quote != base
    }
    return {"base": base, "as_of": as_of.isoformat().replace("+00:00", "Z"), "source": SOURCE, "rates": rates}


class Provider:
    def __init__(self, mode: str = "ok", latency: float = 0.0, hang: float = 30.0) -> None:
        self.mode = mode
        self.latency = latency
        self.hang = hang
        self.retry_after: int | None = None
        self.lock = threading.Lock()
        self.calls = 0
        self.by_status: dict[str, int] = {}
        self.last_call_at: str | None = None
        self.stopping = threading.Event()

    def count(self, status: str) -> None:
        with self.lock:
            self.calls += 1
            self.by_status[status] = self.by_status.get(status, 0) + 1
            self.last_call_at = datetime.now(UTC).isoformat()

    def rates(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        mode = self.mode
        if self.latency:
            self.stopping.wait(self.latency)
        if mode == "fail-timeout":
            self.count("timeout")
            self.stopping.wait(self.hang)  # the client gives up long before this answer
            return 504, {"error": "upstream timeout (fake)"}, {}
        if mode == "fail-5xx":
            self.count("503")
            headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
            return 503, {"error": "service unavailable (fake)"}, headers
        if mode == "fail-4xx":
            self.count("401")
            return 401, {"error": "invalid API key (fake)"}, {}
        base = request.query.get("base", "EUR").upper()
        symbols = [s.strip().upper() for s in request.query.get("symbols", "").split(",") if s.strip()]
        symbols = symbols or sorted(USD_PER_UNIT)
        unknown = [c for c in [base, *symbols] if c not in USD_PER_UNIT]
        if unknown:
            self.count("400")
            return 400, {"error": f"unknown currency: {', '.join(unknown)}"}, {}
        self.count("200")
        return 200, rate_table(base, symbols, datetime.now(UTC)), {}

    def control(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "latency": self.latency,
            "hang": self.hang,
            "retry_after": self.retry_after,
        }

    def set_control(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        body = request.json()
        mode = body.get("mode", self.mode)
        if mode not in MODES:
            return 400, {"error": f"mode must be one of {list(MODES)}"}, {}
        try:
            latency = float(body.get("latency", self.latency))
            hang = float(body.get("hang", self.hang))
            retry_after = body.get("retry_after", self.retry_after)
            retry_after = None if retry_after is None else int(retry_after)
        except (TypeError, ValueError):
            return 400, {"error": "latency and hang are seconds; retry_after whole seconds or null"}, {}
        self.mode, self.latency, self.hang, self.retry_after = mode, latency, hang, retry_after
        return 200, self.control(), {}

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"calls": self.calls, "by_status": dict(self.by_status), "last_call_at": self.last_call_at}

    def reset(self) -> dict[str, Any]:
        with self.lock:
            self.calls, self.by_status, self.last_call_at = 0, {}, None
        return self.stats()


def build_http(provider: Provider, host: str, port: int) -> JsonServer:
    return JsonServer(
        host,
        port,
        {
            ("GET", "/v1/rates"): provider.rates,
            ("GET", "/control"): lambda _: (200, provider.control(), {}),
            ("POST", "/control"): provider.set_control,
            ("GET", "/stats"): lambda _: (200, provider.stats(), {}),
            ("POST", "/stats/reset"): lambda _: (200, provider.reset(), {}),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("FX_PROVIDER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FX_PROVIDER_PORT", "8026")))
    parser.add_argument("--mode", default=os.environ.get("FX_PROVIDER_MODE", "ok"), choices=MODES)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds fail-timeout holds a request")
    args = parser.parse_args()

    provider = Provider(mode=args.mode, latency=args.latency, hang=args.hang)
    http = build_http(provider, args.host, args.port)
    http.serve_until_signalled(
        f"fx provider: http://{args.host}:{http.port}/v1/rates  mode {args.mode}",
        on_stop=provider.stopping.set,  # release requests held by fail-timeout
    )


if __name__ == "__main__":
    main()
