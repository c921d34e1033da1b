"""The FX provider's HTTP API, with timeouts, and its failures classified once.

    GET {FX_PROVIDER_URL}/v1/rates?base=EUR&symbols=USD,GBP
    200 {"base": "EUR", "as_of": "2026-01-31T09:00:00Z", "source": "...", "rates": {"USD": "1.0843", ...}}

Retryable (jobs.errors.RetryableError): timeouts, connection errors, 5xx, 429 (a
Retry-After header overrides the backoff, capped by the task's policy).
Permanent (jobs.errors.PermanentError): any other 4xx, and an answer that is not the table
above (the contract changed; retrying the same request cannot fix it).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from django.conf import settings

from jobs.errors import PermanentError, RetryableError

TRANSIENT_REQUEST_ERRORS = (
    requests.Timeout,  # connect and read timeouts
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,  # the connection broke mid-body
    requests.exceptions.ContentDecodingError,
)


@dataclass(frozen=True)
class RateTable:
    base: str
    as_of: datetime  # UTC
    rates: dict[str, Decimal]  # units of the quote currency per 1 base
    source: str


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class FxProviderClient:
    def __init__(self, *, base_url: str, connect_timeout: float, read_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, read_timeout)

    @classmethod
    def from_settings(cls) -> "FxProviderClient":
        return cls(
            base_url=settings.FX_PROVIDER_URL,
            connect_timeout=settings.FX_PROVIDER_CONNECT_TIMEOUT,
            read_timeout=settings.FX_PROVIDER_READ_TIMEOUT,
        )

    def fetch_rates(self, *, base: str, symbols: Sequence[str]) -> RateTable:
        url = f"{self.base_url}/v1/rates"
        try:
            response = requests.get(
                url,
                params={"base": base, "symbols": ",".join(symbols)},
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except TRANSIENT_REQUEST_ERRORS as exc:
            raise RetryableError(f"FX provider unreachable: {type(exc).__name__}: {exc}") from exc
        except requests.RequestException as exc:  # invalid URL, schema, ...: configuration
            raise PermanentError(f"FX provider request invalid: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status >= 500 or status == 429:
            raise RetryableError(
                f"FX provider answered {status}: {response.text[:200]}",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status != 200:
            raise PermanentError(f"FX provider answered {status}: {response.text[:200]}")
        try:
            return parse_table(response.json(), base=base)
        except (TypeError, ValueError) as exc:  # JSON, shape, Decimal and datetime errors
            raise PermanentError(f"FX provider sent an unreadable table: {exc}") from exc


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
