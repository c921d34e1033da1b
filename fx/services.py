"""FX writes: fetch the provider's table (no transaction open during the call), store it."""

import itertools
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import PermanentError
from fx.client import FxProviderClient, RateTable
from fx.models import FxRate

logger = logging.getLogger(__name__)

RATE_PLACES = Decimal("0.0000000001")  # FxRate.rate has 10 decimal places


@dataclass(frozen=True)
class SyncResult:
    base: str
    as_of: datetime
    stored: int  # rows written (every pair of the configured currencies)
    missing: tuple[str, ...]  # configured currencies the provider did not quote


def fx_rates_sync(*, client: FxProviderClient | None = None) -> SyncResult:
    """Fetch the latest table from the provider and store every pair. Raises the client's
    RetryableError / PermanentError; the task's policy decides what happens next."""
    client = client or FxProviderClient.from_settings()
    base = settings.FX_BASE_CURRENCY
    table = client.fetch_rates(base=base, symbols=[c for c in settings.FX_CURRENCIES if c != base])
    return fx_rates_store(table=table)


def fx_rates_store(*, table: RateTable, currencies: list[str] | None = None) -> SyncResult:
    """Store the table and every cross rate between `currencies` (default FX_CURRENCIES).

    Idempotent: storing the same table again updates the same rows (and their fetched_at).
    """
    wanted = [c.upper() for c in (currencies or settings.FX_CURRENCIES)]
    per_base = {table.base: Decimal(1), **table.rates}  # units of each currency per 1 table.base
    known = [c for c in wanted if c in per_base]
    missing = tuple(c for c in wanted if c not in per_base)
    if len(known) < 2 or table.base not in known:
        raise PermanentError(
            f"FX provider quoted {sorted(table.rates)} for {table.base}; need {table.base} and at least one of {wanted}"
        )
    if missing:
        logger.warning("FX provider did not quote %s; their rates stay as they were", ", ".join(missing))
    now = timezone.now()
    rows = [
        FxRate(
            base=base,
            quote=quote,
            rate=(per_base[quote] / per_base[base]).quantize(RATE_PLACES, rounding=ROUND_HALF_EVEN),
            as_of=table.as_of,
            source=table.source
            if table.base in (base, quote)
            else f"{table.source} (cross via {table.base})",
            fetched_at=now,
        )
        for base, quote in itertools.permutations(known, 2)
    ]
    with transaction.atomic():
        FxRate.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["base", "quote", "as_of"],
            update_fields=["rate", "source", "fetched_at"],
        )
    logger.info("FX rates stored: %d pairs as of %s", len(rows), table.as_of.isoformat())
    return SyncResult(base=table.base, as_of=table.as_of, stored=len(rows), missing=missing)
