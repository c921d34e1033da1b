"""The FX provider's HTTP API, with timeouts, and its failures classified once.

    GET {FX_PROVIDER_URL}/v1/rates?base=EUR&symbols=USD,GBP
    200 {"base": "EUR", "as_of": "2026-01-31T09:00:00Z", "source": "...", "rates": {"USD": "1.0843", ...}}

Failures are classified by core/http.py, as for every outside service: timeouts, connection
errors, 5xx, 408/425/429 retryable (a Retry-After header overrides the backoff, capped by the
task's policy); any other 4xx permanent, and so is an answer that is not the table above (the
contract changed; retrying the same request cannot fix it).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings

from core.http import HttpClient, UpstreamPermanent


@dataclass(frozen=True)
class RateTable:
    base: str
    as_of: datetime  # UTC
    rates: dict[str, Decimal]  # units of the quote currency per 1 base
    source: str


class FxProviderClient:
    def __init__(self, *, base_url: str, connect_timeout: float, read_timeout: float) -> None:
        self.http = HttpClient(
            service="FX provider",
            base_url=base_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(cls) -> "FxProviderClient":
        return cls(
            base_url=settings.FX_PROVIDER_URL,
            connect_timeout=settings.FX_PROVIDER_CONNECT_TIMEOUT,
            read_timeout=settings.FX_PROVIDER_READ_TIMEOUT,
        )

    def fetch_rates(self, *, base: str, symbols: Sequence[str]) -> RateTable:
        response = self.http.request(
            "GET", "/v1/rates", what="rates", params={"base": base, "symbols": ",".join(symbols)}
        )
        if response.status_code != 200:  # a 2xx without the table (204, 202): not the contract
            raise UpstreamPermanent(
                f"FX provider rates: HTTP {response.status_code}", status_code=response.status_code
            )
        try:
            return parse_table(response.json(), base=base)
        except (TypeError, ValueError) as exc:  # JSON, shape, Decimal and datetime errors
            raise UpstreamPermanent(f"FX provider sent an unreadable table: {exc}") from exc


def parse_table(body: Any, *, base: str) -> RateTable:
    """The provider's JSON as a RateTable; TypeError or ValueError when it isn't one."""
    if not isinstance(body, dict) or not isinstance(body.get("rates"), dict):
        raise TypeError("no `rates` object")
    if body.get("base") != base:
        raise ValueError(f"asked for base {base}, got {body.get('base')!r}")
    as_of = datetime.fromisoformat(str(body.get("as_of")))
    if as_of.tzinfo is None:
        raise ValueError("`as_of` has no timezone")
    rates: dict[str, Decimal] = {}
    for quote, raw in body["rates"].items():
        try:
            rate = Decimal(str(raw))
        except InvalidOperation as exc:
            raise ValueError(f"rate for {quote} is not a number: {raw!r}") from exc
        if not rate.is_finite() or rate <= 0:
            raise ValueError(f"rate for {quote} must be a positive number, not {raw!r}")
        rates[str(quote).upper()] = rate
    return RateTable(
        base=base, as_of=as_of.astimezone(UTC), rates=rates, source=str(body.get("source") or "fx-provider")
    )
