"""FX staleness for /metrics (registered with core.metrics in FxConfig.ready)."""

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fx.selectors import staleness_seconds


class FxCollector(Collector):
    """How old the newest FX rates are (alert when stale)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        age = staleness_seconds()
        yield GaugeMetricFamily(
            "taskyard_fx_rates_age_seconds",
            "Seconds since the last successful FX sync (+Inf if there never was one).",
            value=float("inf") if age is None else age,
        )
