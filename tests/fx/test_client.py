"""The provider client against the real fake over HTTP: the table, and every failure classified."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from core.errors import PermanentError, RetryableError
from fakes.fx_provider import rate_table
from fx.client import FxProviderClient, parse_table
from jobs.policy import RetryPolicy
from tests.harness import free_port

SYMBOLS = ["USD", "GBP", "CHF", "JPY", "SEK"]


def client(url: str, read_timeout: float = 5.0) -> FxProviderClient:
    return FxProviderClient(base_url=url, connect_timeout=2.0, read_timeout=read_timeout)


def test_fetches_a_plausible_table(fx):
    table = client(fx.url).fetch_rates(base="EUR", symbols=SYMBOLS)
    assert table.base == "EUR"
    assert sorted(table.rates) == sorted(SYMBOLS)
    assert all(isinstance(rate, Decimal) for rate in table.rates.values())
    assert Decimal("1.0") < table.rates["USD"] < Decimal("1.2")
    assert Decimal(150) < table.rates["JPY"] < Decimal(175)
    assert abs(table.as_of - datetime.now(UTC)) < timedelta(minutes=2)
    assert table.source == "fx-fake"
    assert fx.stats()["by_status"] == {"200": 1}


def test_5xx_is_retryable_and_carries_retry_after(fx):
    fx.control(mode="fail-5xx", retry_after=7)
    with pytest.raises(RetryableError, match="503") as failure:
        client(fx.url).fetch_rates(base="EUR", symbols=SYMBOLS)
    assert failure.value.retry_after == 7.0
    assert RetryPolicy().classify(failure.value) == "retry"


def test_4xx_is_permanent(fx):
    fx.control(mode="fail-4xx")
    with pytest.raises(PermanentError, match="401"):
        client(fx.url).fetch_rates(base="EUR", symbols=SYMBOLS)
    fx.control(mode="ok")
    with pytest.raises(PermanentError, match="400"):  # a currency the provider doesn't know
        client(fx.url).fetch_rates(base="EUR", symbols=["XYZ"])


def test_a_hung_provider_is_a_retryable_timeout(fx):
    # given a provider that holds requests far longer than the read timeout
    fx.control(mode="fail-timeout", hang=10)
    started = time.monotonic()
    # when the client asks with a 0.3 s read timeout, then it gives up in time, retryably
    with pytest.raises(RetryableError, match="ReadTimeout"):
        client(fx.url, read_timeout=0.3).fetch_rates(base="EUR", symbols=SYMBOLS)
    assert time.monotonic() - started < 3
    assert fx.stats()["by_status"] == {"timeout": 1}


def test_latency_below_the_timeout_is_just_slow(fx):
    fx.control(latency=0.3)
    started = time.monotonic()
    assert client(fx.url).fetch_rates(base="EUR", symbols=["USD"]).rates
    assert time.monotonic() - started >= 0.3


def test_nobody_listening_is_retryable():
    with pytest.raises(RetryableError, match="ConnectionError"):
        client(f"http://127.0.0.1:{free_port()}").fetch_rates(base="EUR", symbols=SYMBOLS)


def test_a_misconfigured_url_is_permanent():
    with pytest.raises(PermanentError, match="request failed"):
        client("not-a-url").fetch_rates(base="EUR", symbols=SYMBOLS)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "no `rates`"),
        ({"base": "EUR", "as_of": "2026-01-01T00:00:00Z"}, "no `rates`"),
        ({"base": "USD", "as_of": "2026-01-01T00:00:00Z", "rates": {}}, "asked for base EUR"),
        ({"base": "EUR", "as_of": "2026-01-01T00:00:00", "rates": {}}, "no timezone"),
        ({"base": "EUR", "as_of": "2026-01-01T00:00:00Z", "rates": {"USD": "abc"}}, "not a number"),
        ({"base": "EUR", "as_of": "2026-01-01T00:00:00Z", "rates": {"USD": "-1"}}, "positive"),
        ({"base": "EUR", "as_of": "2026-01-01T00:00:00Z", "rates": {"USD": "NaN"}}, "positive"),
    ],
)
def test_anything_but_a_rate_table_is_refused(body, problem):
    with pytest.raises((TypeError, ValueError), match=problem):
        parse_table(body, base="EUR")


def test_the_fakes_rates_are_fixed_within_a_minute_and_drift_slightly():
    at = datetime(2026, 3, 10, 9, 0, 5, tzinfo=UTC)
    same_minute = rate_table("EUR", ["USD", "JPY"], at + timedelta(seconds=40))
    assert rate_table("EUR", ["USD", "JPY"], at) == same_minute
    later = rate_table("EUR", ["USD", "JPY"], at + timedelta(hours=3))
    for quote in ("USD", "JPY"):
        before, after = Decimal(same_minute["rates"][quote]), Decimal(later["rates"][quote])
        assert before != after
        assert abs(after / before - 1) < Decimal("0.011")  # at most +-0.5 % per currency
