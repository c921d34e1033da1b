"""The sync service against the real fake: every pair stored, idempotent; the selectors."""

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from core.errors import PermanentError, RetryableError
from fx import selectors, services
from fx.client import RateTable
from fx.models import FxRate

pytestmark = pytest.mark.django_db

CURRENCIES = ["EUR", "USD", "GBP", "CHF", "JPY", "SEK"]


def table(rates: dict[str, str], as_of: datetime | None = None) -> RateTable:
    return RateTable(
        base="EUR",
        as_of=as_of or datetime(2026, 3, 10, 9, tzinfo=UTC),
        rates={k: Decimal(v) for k, v in rates.items()},
        source="test",
    )


def test_sync_stores_every_pair_of_the_configured_currencies(fx):
    result = services.fx_rates_sync()
    # one provider call, 6 currencies -> 30 ordered pairs, all at the provider's as-of time
    assert fx.calls() == 1
    assert result.stored == 30
    assert result.missing == ()
    assert FxRate.objects.count() == 30
    assert set(FxRate.objects.values_list("as_of", flat=True)) == {result.as_of}
    # direct rates come from the provider; the others are consistent cross rates
    eur_usd = selectors.latest_rate(base="EUR", quote="USD")
    usd_gbp = selectors.latest_rate(base="USD", quote="GBP")
    eur_gbp = selectors.latest_rate(base="EUR", quote="GBP")
    assert eur_usd is not None
    assert usd_gbp is not None
    assert eur_gbp is not None
    assert eur_usd.source == "fx-fake"
    assert usd_gbp.source == "fx-fake (cross via EUR)"
    assert abs(eur_usd.rate * usd_gbp.rate - eur_gbp.rate) < Decimal("0.000001")
    usd_eur = selectors.latest_rate(base="usd", quote="eur")
    assert usd_eur is not None
    assert abs(usd_eur.rate * eur_usd.rate - 1) < Decimal("0.000001")


def test_storing_the_same_table_again_changes_nothing_but_the_sync_time():
    first = services.fx_rates_store(
        table=table({"USD": "1.08", "GBP": "0.85"}), currencies=["EUR", "USD", "GBP"]
    )
    synced = FxRate.objects.get(base="EUR", quote="USD").fetched_at
    again = services.fx_rates_store(
        table=table({"USD": "1.08", "GBP": "0.85"}), currencies=["EUR", "USD", "GBP"]
    )
    assert first.stored == again.stored == 6
    assert FxRate.objects.count() == 6
    assert FxRate.objects.get(base="EUR", quote="USD").fetched_at > synced


def test_a_newer_table_is_the_latest_and_history_stays():
    old = datetime(2026, 3, 10, 9, tzinfo=UTC)
    services.fx_rates_store(table=table({"USD": "1.08"}, as_of=old), currencies=["EUR", "USD"])
    services.fx_rates_store(
        table=table({"USD": "1.09"}, as_of=old + timedelta(hours=1)), currencies=["EUR", "USD"]
    )
    latest = selectors.latest_rate(base="EUR", quote="USD")
    assert latest is not None
    assert (latest.rate, latest.as_of) == (Decimal("1.09"), old + timedelta(hours=1))
    assert [r.quote for r in selectors.latest_rates(base="EUR")] == ["USD"]
    assert FxRate.objects.filter(base="EUR", quote="USD").count() == 2


def test_a_currency_the_provider_left_out_is_logged_and_the_rest_stored(caplog):
    with caplog.at_level(logging.WARNING, logger="fx.services"):
        result = services.fx_rates_store(table=table({"USD": "1.08", "GBP": "0.85"}), currencies=CURRENCIES)
    assert result.missing == ("CHF", "JPY", "SEK")
    assert result.stored == 6
    assert "did not quote CHF, JPY, SEK" in caplog.text


def test_a_table_with_nothing_usable_is_a_permanent_error():
    with pytest.raises(PermanentError, match="need EUR and at least one"):
        services.fx_rates_store(table=table({"XYZ": "2"}), currencies=CURRENCIES)


def test_a_failing_provider_stores_nothing(fx):
    fx.control(mode="fail-5xx")
    with pytest.raises(RetryableError):
        services.fx_rates_sync()
    assert not FxRate.objects.exists()


def test_latest_rate_for_unknown_and_identical_pairs():
    assert selectors.latest_rate(base="EUR", quote="USD") is None
    same = selectors.latest_rate(base="CHF", quote="chf")
    assert same is not None
    assert same.rate == Decimal(1)
    assert same.pk is None  # not a stored rate
    assert not selectors.latest_rates(base="EUR").exists()


def test_rates_are_stale_two_hours_after_the_last_successful_sync():
    assert selectors.staleness_seconds() is None
    assert selectors.rates_are_stale()  # never synced
    services.fx_rates_store(table=table({"USD": "1.08"}), currencies=["EUR", "USD"])
    now = timezone.now()
    assert selectors.rates_are_stale(now=now) is False
    assert selectors.rates_are_stale(now=now + timedelta(hours=1, minutes=59)) is False
    assert selectors.rates_are_stale(now=now + timedelta(hours=2, seconds=5)) is True
    assert 3 * 3600 <= (selectors.staleness_seconds(now=now + timedelta(hours=3)) or 0) < 3 * 3600 + 5
