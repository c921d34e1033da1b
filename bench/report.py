"""Turns bench/run.py's results into bench/results/<date>.md, PNG plots and a short table."""

import gzip
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
from django.conf import settings

from bench.profiles import saved_name
from bench.scenarios.end_to_end import goal_rows as s3_goal_rows
from bench.scenarios.end_to_end import report_section as s3_section
from bench.scenarios.order_creation import NAMES
from bench.scenarios.order_creation import goal_rows as s1_goal_rows
from bench.scenarios.order_creation import report_section as s1_section
from bench.scenarios.tracing import goal_rows as tracing_goal_rows
from bench.scenarios.tracing import report_section as tracing_section


def goals(r: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(goal, target, measured, met) rows; None when the scenario did not run."""
    rows: list[tuple[str, str, str, bool | None]] = []
    rows += s1_goal_rows(r)
    if "s2_publish" in r:
        p = r["s2_publish"]
        ratio = paired_ratio(p, p["relay"] / p["apply_async"])
        rows.append(("relay publish rate vs apply_async loop", ">= 2x", spread(p, ratio), ratio >= 2))
    if "s2_latency" in r:
        o = r["s2_latency"]["outbox"]
        rows.append(
            (
                "commit-to-task-start p99 at 50/s (outbox)",
                "<= 10 ms",
                f"{o['p99_ms']:.1f} ms",
                o["p99_ms"] <= 10,
            )
        )
    rows += s3_goal_rows(r)
    if "s4_throughput" in r:
        t = r["s4_throughput"]
        ratio = paired_ratio(t, t["base"] / t["plain"])
        rows.append(
            ("no-op throughput, base task vs plain Celery", ">= 0.85x", spread(t, ratio), ratio >= 0.85)
        )
    if "s4_rss" in r:
        m = r["s4_rss"]
        rows.append(
            (
                f"worker RSS growth over {m['tasks']:,} tasks",
                "< 5 %",
                f"{m['growth_pct']:.1f} %",
                m["growth_pct"] < 5,
            )
        )
    rows += tracing_goal_rows(r)
    return rows


def failed(reasons: int | dict[str, int]) -> str:
    """Requests that got no 201: the count, and why (a client timeout is an overloaded web tier)."""
    if isinstance(reasons, int):
        return str(reasons)
    total = sum(reasons.values())
    return f"{total} ({', '.join(f'{n} {why}' for why, n in sorted(reasons.items()))})" if total else "0"


def paired_ratio(result: dict[str, Any], fallback: float) -> float:
    """The median of the ratios measured pair by pair (bench/measure.py `paired`)."""
    ratios = result.get("ratios")
    return statistics.median(ratios) if ratios else fallback


def spread(result: dict[str, Any], ratio: float) -> str:
    ratios = result.get("ratios") or []
    if len(ratios) < 2:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x (pairs {min(ratios):.2f}-{max(ratios):.2f})"


def plots(r: dict[str, Any], out: Path, stem: str) -> list[str]:
    made = []
    if "s1" in r:
        s, levels = r["s1"]["summary"], r["s1"]["levels"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
        width = 0.2
        for i, variant in enumerate("abcd"):
            xs = [n + (i - 1.5) * width for n in range(len(levels))]
            left.bar(xs, [s[variant][level]["rps"] for level in levels], width, label=NAMES[variant])
            right.bar(xs, [s[variant][level]["p99_ms"] for level in levels], width, label=NAMES[variant])
        for axis, title in ((left, "POST /api/orders throughput (req/s)"), (right, "p99 latency (ms, log)")):
            axis.set_xticks(range(len(levels)), [f"{level} conns" for level in levels])
            axis.set_title(title)
        right.set_yscale("log")
        left.legend(fontsize=8)
        made.append(save(fig, out / f"{stem}-orders.png"))
    if "s3" in r:
        fig, axis = plt.subplots(figsize=(6, 3.5))
        for e in r["s3"]["runs"]:
            values = sorted(e["latencies"])
            axis.plot(
                values, [i / len(values) for i in range(len(values))], label=f"{e['rate']:.0f} orders/s"
            )
        axis.set_xscale("log")
        axis.set_xlabel("POST -> email in the SMTP sink (ms, log)")
        axis.set_ylabel("fraction of orders")
        axis.set_title("End to end (CDF)")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
        made.append(save(fig, out / f"{stem}-e2e.png"))
    if "s4_rss" in r:
        fig, axis = plt.subplots(figsize=(6, 3.5))
        done, rss = zip(*r["s4_rss"]["samples"], strict=True)
        axis.plot(done, [x / 1024 for x in rss], marker=".")
        axis.set_xlabel("tasks run")
        axis.set_ylabel("worker RSS, main + 2 children (MiB)")
        axis.set_ylim(bottom=0)
        axis.set_title("Worker memory, children never recycled")
        made.append(save(fig, out / f"{stem}-rss.png"))
    return made


def cpu_cells(used: dict[str, float], roles: list[str]) -> list[str]:
    return [f"{used.get(role, 0):.2f}" for role in roles]


def save_profiles(r: dict[str, Any], out: Path, stem: str) -> None:
    """S3's flame graphs and collapsed stacks, as files next to the report."""
    for role, found in ((r.get("s3") or {}).get("profiles") or {}).get("roles", {}).items():
        if "svg" in found:
            name = saved_name(stem, role)
            (out / f"{name}.svg").write_text(found["svg"])
            (out / f"{name}.txt.gz").write_bytes(gzip.compress(found["stacks"].encode(), mtime=0))


def save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def write_report(r: dict[str, Any], out: Path, label: str = "") -> Path:
    """bench/results/<date>[-<label>].md, .json and the files it shows."""
    out.mkdir(parents=True, exist_ok=True)
    stem = datetime.now(UTC).strftime("%Y-%m-%d") + (f"-{label}" if label else "")
    images = plots(r, out, stem)
    save_profiles(r, out, stem)
    checks = goals(r)
    parts = [f"# Benchmark {stem}{' (quick run)' if r.get('quick') else ''}", ""]
    parts += ["Machine: " + ", ".join(f"{k} {v}" for k, v in r["machine"].items()), ""]
    parts += [f"Run {r['started']} to {r.get('finished', '?')}. Reproduce: `make bench`.", ""]
    parts += ["Settings that differ from production (config/settings/bench.py):", ""]
    parts += [
        f"* {what}: {how}" for what, how in getattr(settings, "BENCH_DIFFERS_FROM_PRODUCTION", {}).items()
    ] + [""]
    parts += [
        "## Goals",
        "",
        table(
            [["goal", "target", "measured", "met"]]
            + [[g, t, m, {True: "yes", False: "**no**", None: "-"}[ok]] for g, t, m, ok in checks]
        ),
        "",
    ]
    parts += s1_section(r)
    if "s2_publish" in r:
        p = r["s2_publish"]
        parts += [
            "## S2 publishing and commit-to-start latency",
            "",
            f"{p['count']:,} messages to Redis; median of {len(p.get('ratios') or [1])} side-by-side pairs (order alternating):",
            "",
        ]
        parts += [
            table(
                [
                    ["publisher", "msg/s"],
                    ["relay (SKIP LOCKED batches of 500, Producer.batch)", f"{p['relay']:.0f}"],
                    ["loop of apply_async", f"{p['apply_async']:.0f}"],
                ]
            ),
            "",
        ]
    if "s2_latency" in r:
        rows = [["enqueue", "n", "p50 ms", "p95 ms", "p99 ms"]]
        for mode, figures in r["s2_latency"].items():
            rows.append(
                [
                    mode,
                    str(figures["n"]),
                    f"{figures['p50_ms']:.1f}",
                    f"{figures['p95_ms']:.1f}",
                    f"{figures['p99_ms']:.1f}",
                ]
            )
        parts += [
            "Commit to task start at 50 tasks/s (relay woken by NOTIFY; worker with 2 children):",
            "",
            table(rows),
            "",
        ]
    parts += s3_section(r, failed, table, stem)
    if "s4_throughput" in r:
        t = r["s4_throughput"]
        parts += [
            "## S4 workers",
            "",
            f"{t['count']:,} no-op tasks (each increments a Redis counter), 2 pool children; median of {len(t.get('ratios') or [1])} side-by-side pairs:",
            "",
        ]
        cpu = t.get("cpu_ms_per_task") or {}
        roles = sorted({role for kind in cpu.values() for role in kind})
        parts += [
            table(
                [
                    ["task", "tasks/s", *[f"{role} CPU-ms/task" for role in roles]],
                    ["plain Celery task", f"{t['plain']:.0f}", *cpu_cells(cpu.get("plain", {}), roles)],
                    [
                        "project base task (TaskRun claim + finish)",
                        f"{t['base']:.0f}",
                        *cpu_cells(cpu.get("base", {}), roles),
                    ],
                ]
            ),
            "",
        ]
    if "s4_rss" in r:
        m = r["s4_rss"]
        parts += [
            f"RSS (main + children, max-tasks-per-child off): {m['rss_after_warmup_kib'] / 1024:.1f} MiB after warm-up, {m['rss_end_kib'] / 1024:.1f} MiB after {m['tasks']:,} tasks ({m['growth_pct']:+.1f} %).",
            "",
        ]
    if "s5" in r:
        s5 = r["s5"]
        parts += [
            "## S5 scaling",
            "",
            table(
                [
                    ["setup", "figure"],
                    ["1 pool process", f"{s5['one_process']:.0f} tasks/s"],
                    [
                        "2 pool processes",
                        f"{s5['two_processes']:.0f} tasks/s ({s5['two_processes'] / s5['one_process']:.2f}x)",
                    ],
                    [
                        f"{s5['backlog']:,} backlog, drain incl. worker start",
                        f"{s5['backlog_seconds']:.1f} s ({s5['backlog_rate']:.0f}/s)",
                    ],
                ]
            ),
            "",
        ]
    parts += tracing_section(r)
    if "flows" in r:
        f = r["flows"]
        parts += [
            "## Flows: fan-in of 10,000 children (bench/scenarios/flows.py)",
            "",
            table(
                [
                    ["figure", "measured"],
                    [
                        "flow start (one transaction: steps + first outbox rows)",
                        f"{f['start_transaction_seconds']:.2f} s",
                    ],
                    [
                        "children run (2 pool children)",
                        (
                            f"{f['children_per_second']:.0f}/s; the same tasks without a flow "
                            f"{f['same_tasks_without_a_flow_per_second']:.0f}/s"
                        ),
                    ],
                    [
                        "last child's outcome -> next step started",
                        f"{f['last_child_to_next_step_ms']:.0f} ms",
                    ],
                    [
                        "next step: outbox rows / runs",
                        f"{f['next_step_outbox_rows']} / {f['next_step_runs']}",
                    ],
                    ["rows written per child (jobs tables)", f"{f['rows_written_per_child']:.2f}"],
                    ["WAL per child while running", f"{f['wal_bytes_per_child']:,} bytes"],
                ]
            ),
            "",
        ]
    parts += [f"![{name}]({name})" for name in images]
    path = out / f"{stem}.md"
    path.write_text("\n".join(parts) + "\n")
    raw = dict(r)
    if "s3" in raw:
        runs = [{k: v for k, v in e.items() if k != "latencies"} for e in raw["s3"]["runs"]]
        raw["s3"] = {**raw["s3"], "runs": runs}
        if "roles" in (found := raw["s3"].get("profiles") or {}):
            kept = {
                role: {k: v for k, v in p.items() if k not in ("svg", "stacks")}
                for role, p in found["roles"].items()
            }
            raw["s3"]["profiles"] = {**found, "roles": kept}
    (out / f"{stem}.json").write_text(json.dumps(raw, indent=1, default=str))
    print(table([["goal", "target", "measured", "met"]] + [[g, t, m, str(ok)] for g, t, m, ok in checks]))
    return path
