"""S2 relay publish rate vs a loop of apply_async; commit-to-task-start latency at 50/s,
outbox vs .delay()."""

import statistics
import time

from bench.measure import paired, pct, say, started_at_least, wait
from bench.stack import Bench


def s2_relay(bench: Bench) -> None:
    from django.db import transaction

    from bench import tasks
    from jobs import outbox
    from jobs.relay import Relay

    count = 5000 if bench.quick else 20000

    def relay_rate() -> float:
        bench.reset_data()
        for start in range(0, count, 1000):
            with transaction.atomic(), outbox.batch():
                for _ in range(min(1000, count - start)):
                    outbox.enqueue("bench.noop")
        relay = Relay(batch_size=500)
        started = time.perf_counter()
        published = 0
        while (n := relay.relay_once()) > 0:
            published += n
        return published / (time.perf_counter() - started)

    def loop_rate() -> float:
        bench.reset_data()
        started = time.perf_counter()
        for _ in range(count):
            tasks.noop.apply_async()
        return count / (time.perf_counter() - started)

    relay_rates, loop_rates = paired(relay_rate, loop_rate, reps=1 if bench.quick else 5)
    for rep, (r, loop) in enumerate(zip(relay_rates, loop_rates, strict=True)):
        say(f"S2 publish rep {rep + 1}: relay {r:.0f} msg/s, apply_async loop {loop:.0f} msg/s")
    bench.reset_data()
    bench.results["s2_publish"] = {
        "count": count,
        "relay": statistics.median(relay_rates),
        "apply_async": statistics.median(loop_rates),
        "ratios": [r / loop for r, loop in zip(relay_rates, loop_rates, strict=True)],
    }
    bench.results["s2_latency"] = commit_to_start(bench, rate=50, seconds=10 if bench.quick else 20)


def commit_to_start(bench: Bench, rate: float, seconds: float) -> dict[str, dict[str, float]]:
    from django.db import transaction

    from bench import tasks
    from jobs import outbox

    relay = bench.procs.relay("relay-s2", LOG_LEVEL="INFO")
    worker = bench.procs.worker("s2", queues="default", concurrency=2)
    out: dict[str, dict[str, float]] = {}
    for mode in ("outbox", "delay"):
        bench.reset_data()
        commits: dict[str, float] = {}
        interval, next_at = 1.0 / rate, time.perf_counter()
        for i in range(int(rate * seconds)):
            mark = f"{mode}-{i}"
            if mode == "outbox":
                with transaction.atomic():
                    outbox.enqueue("bench.started", kwargs={"mark": mark})
            commits[mark] = time.time()  # committed: from here on the task may start
            if mode == "delay":
                tasks.started.delay(mark=mark)
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
        client = bench.redis()
        wait(started_at_least(client, len(commits)), 60, f"{mode} tasks to start")
        starts = {k.decode(): float(v) for k, v in client.hgetall("bench:started").items()}
        lat = [(starts[m] - t) * 1000 for m, t in commits.items() if m in starts]
        out[mode] = {"n": len(lat), "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99)}
        say(
            f"S2 commit->start {mode} at {rate:.0f}/s: p50 {out[mode]['p50_ms']:.1f} ms p99 {out[mode]['p99_ms']:.1f} ms"
        )
    worker.stop()
    relay.stop()
    bench.reset_data()
    return out
