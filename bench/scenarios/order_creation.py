"""S1 order creation: (a) create only, (b) the outbox, (c) .delay() after commit, (d) everything
in the request; wrk at several concurrencies, medians of repeats."""

import statistics
import sys

from bench.measure import say
from bench.stack import VARIANTS, Bench, free_port


def s1_orders(bench: Bench) -> None:
    sink_dir = bench.tmp / "sink"
    from tests.conftest import start_sink

    sink = start_sink(bench.procs, sink_dir)
    fx_port = free_port()
    bench.procs.spawn(
        "fx-fake", [sys.executable, "-m", "fakes.fx_provider", "--port", str(fx_port), "--latency", "0.2"]
    ).wait_for_log("fx provider")
    ports = {v: free_port() for v in VARIANTS}
    extra = {"EMAIL_PORT": str(sink.smtp_port), "FX_PROVIDER_URL": f"http://127.0.0.1:{fx_port}"}
    webs = {v: bench.web(v, ports[v], **extra) for v in VARIANTS}
    levels = [16] if bench.quick else [4, 16, 32]
    reps = 1 if bench.quick else 3
    seconds = 4 if bench.quick else 8
    runs: dict[str, dict[int, list[dict[str, float]]]] = {v: {c: [] for c in levels} for v in VARIANTS}
    for variant in VARIANTS:  # warm every process up (imports, connections, first queries)
        bench.wrk(ports[variant], 4, 2)
    for rep in range(reps):
        for connections in levels:
            for variant in ("a", "b", "c", "d"):
                if variant == "d" and rep > 0:
                    continue  # 200 ms per request: one run says enough
                bench.reset_data()
                data = bench.wrk(ports[variant], connections, seconds)
                runs[variant][connections].append(data)
                say(
                    f"S1 {variant} ({VARIANTS[variant][0]}) c={connections} rep {rep + 1}/{reps}: "
                    f"{data['rps']:.0f} req/s p50 {data['p50_ms']:.1f} ms p99 {data['p99_ms']:.1f} ms"
                    f"{' non-2xx ' + str(int(data['non2xx'])) if data['non2xx'] else ''}"
                )
    for proc in webs.values():
        proc.stop()
    bench.reset_data()
    summary: dict[str, dict[int, dict[str, float]]] = {}
    for variant, by_level in runs.items():
        summary[variant] = {}
        for level, items in by_level.items():
            summary[variant][level] = {
                key: statistics.median(item[key] for item in items)
                for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "non2xx")
            }
            summary[variant][level]["runs"] = len(items)
    bench.results["s1"] = {"levels": levels, "seconds": seconds, "reps": reps, "summary": summary}
