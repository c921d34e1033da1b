"""S1 order creation: the floor (a bare DRF APIView that INSERTs one row, bench/urls.py) and
(a) create only, (b) the outbox, (c) .delay() after commit, (d) everything in the request;
wrk at several concurrencies, medians of interleaved repeats. The floor is served by (b)'s
gunicorn, so the full create and the floor share processes, settings and middleware."""

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.measure import say
from bench.stack import BARE_PATH, VARIANTS, Bench, free_port

NAMES = {
    "bare": "floor: bare APIView, one INSERT",
    "a": "a create only",
    "b": "b outbox (the project)",
    "c": "c .delay()",
    "d": "d synchronous",
}
ORDER = ("bare", "a", "b", "c", "d")
# issue 18: the full create at >= 0.5x the floor's throughput, p99 <= 2x the floor's
FLOOR_THROUGHPUT, FLOOR_P99 = 0.5, 2.0
# The S1 runs docs/performance.md compares (label -> results file); a new run is added here.
RESULTS = Path(__file__).resolve().parent.parent / "results"
FLOOR_RUNS = {
    "[before](/bench/results/2026-12-01-s1-before.md) (bc9f381)": "2026-12-01-s1-before.json",
    "[after](/bench/results/2026-12-01.md) `core/serializers.py` (95595f1)": "2026-12-01.json",
}


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
    targets = {"bare": (ports["b"], BARE_PATH), **{v: (ports[v], "/api/orders") for v in VARIANTS}}
    levels = [16] if bench.quick else [4, 16, 32]
    reps = 1 if bench.quick else 3
    seconds = 4 if bench.quick else 8
    runs: dict[str, dict[int, list[dict[str, float]]]] = {v: {c: [] for c in levels} for v in ORDER}
    for port, path in targets.values():  # warm every process up (imports, connections, first queries)
        bench.wrk(port, 4, 2, path)
    for rep in range(reps):
        for connections in levels:
            for variant in ORDER:
                if variant == "d" and rep > 0:
                    continue  # 200 ms per request: one run says enough
                bench.reset_data()
                port, path = targets[variant]
                data = bench.wrk(port, connections, seconds, path)
                runs[variant][connections].append(data)
                say(
                    f"S1 {variant} ({NAMES[variant]}) c={connections} rep {rep + 1}/{reps}: "
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


def _cells(r: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The summary, and the level the goals are judged at (16 connections; JSON keys are strings)."""
    s = r["s1"]["summary"]
    level = next((k for k in (16, "16") if k in s["a"]), r["s1"]["levels"][0])
    return s, level


def goal_rows(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    if "s1" not in r:
        return []
    s, level = _cells(r)
    a, b, d = (s[v][level] for v in ("a", "b", "d"))
    rows: list[tuple[str, str, str, bool | None]] = []
    if "bare" in s:  # results from before the floor was measured have none
        bare = s["bare"][level]
        rows += [
            (
                "order create throughput vs the floor (bare APIView)",
                f">= {FLOOR_THROUGHPUT}x",
                f"{b['rps'] / bare['rps']:.2f}x",
                b["rps"] / bare["rps"] >= FLOOR_THROUGHPUT,
            ),
            (
                "order create p99 vs the floor's",
                f"<= {FLOOR_P99}x",
                f"{b['p99_ms'] / bare['p99_ms']:.2f}x",
                b["p99_ms"] / bare["p99_ms"] <= FLOOR_P99,
            ),
        ]
    rows += [
        (
            "order create throughput, outbox vs create only",
            ">= 0.85x",
            f"{b['rps'] / a['rps']:.2f}x",
            b["rps"] / a["rps"] >= 0.85,
        ),
        (
            "order create p99, outbox vs create only",
            "<= 1.5x",
            f"{b['p99_ms'] / a['p99_ms']:.2f}x",
            b["p99_ms"] / a["p99_ms"] <= 1.5,
        ),
        (
            "order create throughput, outbox vs synchronous",
            ">= 30x",
            f"{b['rps'] / d['rps']:.0f}x",
            b["rps"] / d["rps"] >= 30,
        ),
    ]
    return rows


def report_section(r: dict[str, Any]) -> list[str]:
    if "s1" not in r:
        return []
    s = r["s1"]
    lines = [
        "## S1 order creation (POST /api/orders, gunicorn 2 sync workers, wrk)",
        "",
        (
            f"Median of {s['reps']} interleaved runs of {s['seconds']} s per cell (d: 1 run). No relay or worker "
            "runs during S1, so background work does not compete for the 2 cores; (d) talks to the SMTP sink, "
            "renders the PDF and calls a fake vendor with 200 ms latency inside the request. The floor is a "
            f"plain DRF APIView (no auth, no throttle, no serializer) that INSERTs one row, at `{BARE_PATH}` "
            "on (b)'s gunicorn (bench/urls.py)."
        ),
        "",
        "| variant | conns | req/s | p50 ms | p95 ms | p99 ms | vs floor | vs a |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant in (v for v in ORDER if v in s["summary"]):
        for level in s["levels"]:
            cell = s["summary"][variant].get(level) or s["summary"][variant][str(level)]
            row = [NAMES[variant], str(level), f"{cell['rps']:.0f}"]
            row += [f"{cell[k]:.1f}" for k in ("p50_ms", "p95_ms", "p99_ms")]
            for base in ("bare", "a"):
                by_level = s["summary"].get(base, {})
                other = by_level.get(level) or by_level.get(str(level))
                row.append(f"{cell['rps'] / other['rps']:.2f}x" if other else "-")
            lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def floor_comparison(runs: dict[str, str] = FLOOR_RUNS) -> str:
    """docs/performance.md's table of the create against the floor, one row per results file
    (label -> file in bench/results/), so the figures there come from the runs themselves."""
    header = (
        f"| run | floor req/s | create req/s | create / floor (goal >= {FLOOR_THROUGHPUT}x) "
        f"| create-only / floor | create p99 / floor p99 (goal <= {FLOOR_P99}x) |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for label, name in runs.items():
        s, level = _cells(json.loads((RESULTS / name).read_text()))
        bare, a, b = (s[v][level] for v in ("bare", "a", "b"))
        lines.append(
            f"| {label} | {bare['rps']:,.0f} | {b['rps']:,.0f} | {b['rps'] / bare['rps']:.2f}x "
            f"| {a['rps'] / bare['rps']:.2f}x | {b['p99_ms']:.1f} / {bare['p99_ms']:.1f} ms = "
            f"{b['p99_ms'] / bare['p99_ms']:.2f}x |"
        )
    return "\n".join(lines)
