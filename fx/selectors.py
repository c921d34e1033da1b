"""FX reads. Rates are global (not owned by a user).

Other apps use `latest_rate` to convert amounts, and `rates_are_stale` /
`staleness_seconds` for metrics and alerts:

    rate = fx.selectors.latest_rate(base="EUR", quote="USD")   # FxRate | None
    usd = (eur_total * rate.rate).quantize(Decimal("0.01"))
"""

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Max, QuerySet
from django.utils import timezone

from fx.models import FxRate


def latest_rate(*, base: str, quote: str) -> FxRate | None:
    """The newest rate for base -> quote (units of quote per 1 base), or None if never synced.

    For base == quote it returns an unsaved FxRate with rate 1 (no conversion needed).
    The caller decides whether `as_of` is recent enough; `rates_are_stale()` says whether
    the sync is behind.
    """
    base, quote = base.upper(), quote.upper()
    if base == quote:
        now = timezone.now()
        return FxRate(base=base, quote=quote, rate=Decimal(1), as_of=now, source="identity", fetched_at=now)
    return FxRate.objects.filter(base=base, quote=quote).order_by("-as_of").first()


def latest_rates(*, base: str) -> QuerySet[FxRate]:
    """The newest table for `base`: every quote at base's latest as-of time (empty if none)."""
    base = base.upper()
    newest = FxRate.objects.filter(base=base).aggregate(newest=Max("as_of"))["newest"]
    if newest is None:
        return FxRate.objects.none()
    return FxRate.objects.filter(base=base, as_of=newest).order_by("quote")


def last_synced_at() -> datetime | None:
    """When a sync last stored rates (successfully)."""
    return FxRate.objects.aggregate(last=Max("fetched_at"))["last"]


def staleness_seconds(*, now: datetime | None = None) -> float | None:
    """Seconds since the last successful sync; None when there never was one."""
    last = last_synced_at()
    if last is None:
        return None
    return max(0.0, ((now or timezone.now()) - last).total_seconds())


def rates_are_stale(*, now: datetime | None = None) -> bool:
    """True when the last successful sync is older than FX_STALE_AFTER_SECONDS (2 h), or never ran."""
    age = staleness_seconds(now=now)
    return age is None or age > settings.FX_STALE_AFTER_SECONDS
