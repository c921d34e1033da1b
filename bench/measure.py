"""Helpers every scenario uses: a log line, percentiles, paired runs and bounded waits."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def say(message: str) -> None:
    print(f"[bench {datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def paired(
    first: Callable[[], float], second: Callable[[], float], *, reps: int
) -> tuple[list[float], list[float]]:
    """Run two measurements side by side `reps` times, alternating which goes first, so a
    machine that drifts (other tenants, CPU boost) weighs on both equally. The report takes
    the median of the per-pair ratios."""
    a, b = [], []
    for rep in range(reps):
        if rep % 2:
            b.append(second())
            a.append(first())
        else:
            a.append(first())
            b.append(second())
    return a, b


def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    from tests.harness import wait_until  # the tests' bounded wait: a condition, never a bare sleep

    return wait_until(predicate, timeout=timeout, interval=interval, message=what)


def started_at_least(client: Any, count: int) -> Callable[[], bool]:
    return lambda: int(client.hlen("bench:started")) >= count


def done_at_least(client: Any, count: int) -> Callable[[], bool]:
    return lambda: int(client.get("bench:done") or 0) >= count
