"""FX rates: one row per currency pair and provider as-of time.

A sync stores the provider's table for FX_BASE_CURRENCY and every cross rate between
FX_CURRENCIES, all with the provider's as-of time, so "the latest table for a base" is
the rows at that base's newest as-of. Storing the same table again (a re-run) updates
the rows in place: (base, quote, as_of) is unique.
"""

from django.db import models

# A rate is numeric(RATE_DIGITS, RATE_PLACES): below 10**10 units of quote per 1 base.
RATE_DIGITS = 20
RATE_PLACES = 10


class FxRate(models.Model):
    base = models.CharField(max_length=3)  # ISO 4217
    quote = models.CharField(max_length=3)
    # units of quote per 1 base
    rate = models.DecimalField(max_digits=RATE_DIGITS, decimal_places=RATE_PLACES)
    as_of = models.DateTimeField()  # the provider's time for the rate (UTC)
    source = models.CharField(max_length=100)  # provider, and the cross currency if derived
    fetched_at = models.DateTimeField()  # when our sync stored it: staleness is measured from here

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["base", "quote", "as_of"], name="fx_rate_once_per_as_of"),
            models.CheckConstraint(condition=models.Q(rate__gt=0), name="fx_rate_positive"),
        ]
        indexes = [
            models.Index(fields=["base", "quote", "-as_of"], name="fx_rate_latest"),
            models.Index(fields=["fetched_at"], name="fx_rate_fetched"),
        ]
        ordering = ["base", "quote", "-as_of"]

    def __str__(self) -> str:
        return f"1 {self.base} = {self.rate} {self.quote} @ {self.as_of:%Y-%m-%d %H:%M}Z"
