"""GET /api/fx/rates: the latest table for a base, authenticated, problem details on errors."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from fx import services
from fx.client import RateTable
from fx.models import FxRate

pytestmark = pytest.mark.django_db

URL = "/api/fx/rates"


@pytest.fixture
def synced() -> datetime:
    as_of = datetime(2026, 3, 10, 9, tzinfo=UTC)
    services.fx_rates_store(
        table=RateTable(
            base="EUR", as_of=as_of, rates={"USD": Decimal("1.0843"), "GBP": Decimal("0.8512")}, source="test"
        ),
        currencies=["EUR", "USD", "GBP"],
    )
    return as_of


def test_returns_the_latest_rates_for_a_base_with_their_as_of_time(api, synced):
    response = api.get(URL, {"base": "EUR"})
    assert response.status_code == 200
    body = response.json()
    assert body["base"] == "EUR"
    assert body["as_of"] == "2026-03-10T09:00:00Z"
    assert body["stale"] is False
    assert body["synced_at"]
    assert body["rates"] == [
        {"quote": "GBP", "rate": "0.8512000000", "as_of": "2026-03-10T09:00:00Z", "source": "test"},
        {"quote": "USD", "rate": "1.0843000000", "as_of": "2026-03-10T09:00:00Z", "source": "test"},
    ]


def test_any_configured_base_works_and_case_does_not_matter(api, synced):
    body = api.get(URL, {"base": "usd"}).json()
    assert body["base"] == "USD"
    assert [r["quote"] for r in body["rates"]] == ["EUR", "GBP"]
    assert api.get(URL).json()["base"] == "EUR"  # FX_BASE_CURRENCY by default


def test_old_rates_are_flagged_stale(api, synced):
    FxRate.objects.update(fetched_at=datetime.now(UTC) - timedelta(hours=3))
    assert api.get(URL, {"base": "EUR"}).json()["stale"] is True


def test_anonymous_requests_are_401(anon, synced):
    response = anon.get(URL, {"base": "EUR"})
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not-authenticated"


@pytest.mark.parametrize("base", ["XYZ", "EURO", "1"])
def test_an_invalid_base_is_a_400_problem_naming_the_field(api, synced, base):
    response = api.get(URL, {"base": base})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation-error"
    assert list(body["errors"]) == ["base"]


def test_before_the_first_sync_the_rates_are_unavailable(api):
    response = api.get(URL, {"base": "EUR"})
    assert response.status_code == 404
    assert response.json()["code"] == "fx-rates-unavailable"
