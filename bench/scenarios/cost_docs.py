"""The cost-per-order tables in docs/performance.md and the README, rendered from the S3/S4
results files and saved profiles of the before and after runs, so the figures are the runs'."""

import json
import statistics
from pathlib import Path
from typing import Any

from bench import profiles
from bench.scenarios.end_to_end import CPU_GOAL_MS, excluding_load

# --- docs/performance.md and the README: CPU per order before and after --------------------
RESULTS = Path(__file__).resolve().parent.parent / "results"
COST_RUNS = {"before": "2026-12-01-cost-before.json", "after": "2026-12-01-cost.json"}
COST_RATES = (10.0, 25.0)


def _load(names: list[str]) -> list[dict[str, Any]]:
    return [json.loads((RESULTS / name).read_text()) for name in names]


def _link(name: str, r: dict[str, Any]) -> str:
    stem = name.removesuffix(".json")
    return f"[{stem}](/bench/results/{stem}.md) at {r['machine'].get('commit', '?')}"


def _cpu_table(
    found: dict[str, list[dict[str, Any]]], rates: tuple[float, ...], header: str, *, with_range: bool
) -> list[str]:
    """CPU-ms per order by role and the p99, one column per (side, rate): each cell the median
    over the side's runs (a side of one run shows that run's figures)."""
    cells = [
        (label, rate, [next(e for e in r["s3"]["runs"] if e["rate"] == rate) for r in results])
        for rate in rates
        for label, results in found.items()
    ]

    def cpu(entries: list[dict[str, Any]], role: str) -> float:
        return statistics.median(e["cpu_ms_per_order"].get(role, 0) for e in entries)

    roles = sorted(
        {role for *_, entries in cells for e in entries for role in e["cpu_ms_per_order"]},
        key=lambda role: -cpu(cells[0][2], role),
    )
    totals = [sorted(excluding_load(e) for e in entries) for *_, entries in cells]
    lines = [
        f"| {header} | " + " | ".join(f"{label} {rate:.0f}/s" for label, rate, _ in cells) + " |",
        "|---|" + "---|" * len(cells),
    ]
    lines += [
        f"| {role} | " + " | ".join(f"{cpu(entries, role):.1f}" for *_, entries in cells) + " |"
        for role in roles
    ]
    lines.append(
        f"| **all but the load generator** (goal <= {CPU_GOAL_MS}) | "
        + " | ".join(
            f"**{statistics.median(t):.1f}**" + (f" ({t[0]:.1f}-{t[-1]:.1f})" if with_range else "")
            for t in totals
        )
        + " |"
    )
    lines.append(
        "| POST -> email p99, ms | "
        + " | ".join(f"{statistics.median(e['p99_ms'] for e in entries):.0f}" for *_, entries in cells)
        + " |"
    )
    return lines


def cost_comparison(runs: dict[str, str] = COST_RUNS, rates: tuple[float, ...] = COST_RATES) -> str:
    """CPU-ms per order by role, and p99, at each rate in `rates`: one column per (run, rate),
    read from the results files in bench/results/, so the figures in the docs are the runs'."""
    found = {label: _load([name]) for label, name in runs.items()}
    lines = _cpu_table(found, rates, "CPU-ms per order", with_range=False)
    for label, (r,) in found.items():
        if "s4_throughput" in r:
            t = r["s4_throughput"]
            ratios = sorted(t["ratios"])
            cpu = t.get("cpu_ms_per_task", {})
            cost = {
                kind: sum(v for k, v in cpu.get(kind, {}).items() if k != "load generator")
                for kind in ("base", "plain")
            }
            lines += [
                "",
                (
                    f"S4 ({label}): no-op tasks through the base task at {statistics.median(ratios):.2f}x plain Celery's "
                    f"rate (median of {len(ratios)} pairs, {ratios[0]:.2f}-{ratios[-1]:.2f}; goal >= 0.85x), "
                    f"{t['base']:.0f} against {t['plain']:.0f} tasks/s; worker + PostgreSQL + Redis CPU per task "
                    f"{cost['base']:.2f} ms against {cost['plain']:.2f} ms."
                ),
            ]
    commits = ", ".join(f"{label}: {_link(runs[label], r)}" for label, (r,) in found.items())
    return "\n".join([*lines, "", f"Runs: {commits}."])


# What each cut of issue 18 took of its role's profile, before and after (docs/performance.md).
PROFILE_CUTS = [
    (
        "the relay's mark-sent and next-due statements",
        "relay",
        ["Relay.mark_sent (", "Relay.seconds_until_next_due ("],
    ),
    ("the email's outcome (attempt + status)", "email-worker", ["_finish (notifications"]),
    (
        "storing the invoice row",
        "documents-worker",
        ["QuerySet.update_or_create (", "QuerySet.bulk_create ("],
    ),
    ("the connection health check", "web", ["DatabaseWrapper.is_usable ("]),
]


# The second round (a later session, on another VM, so its own before runs): its cuts were a
# few per cent each, within one run's noise, so each side ran three times, interleaved.
COST_RUNS_2 = {
    "before": [
        "2026-12-01-cost2-before.json",
        "2026-12-01-cost2-before-2.json",
        "2026-12-01-cost2-before-3.json",
    ],
    "after": ["2026-12-01-cost2.json", "2026-12-01-cost2-2.json", "2026-12-01-cost2-3.json"],
}
PROFILE_RUNS_2 = {label: names[0] for label, names in COST_RUNS_2.items()}  # each side's first run
PROFILE_CUTS_2 = [
    (
        "the invoice render's reads",
        "documents-worker",
        # before: the order (get), its invoice and the owner's profile (first); after: one function
        ["_order_to_render (", "QuerySet.get (", "QuerySet.first ("],
    ),
    (
        "the messages middleware",
        "web",
        ["MessageMiddleware.process_request (", "LazyMessageMiddleware.process_request ("],
    ),
    ("building choice fields (every serializer copy)", "web", ["ChoiceField.__init__ ("]),
]


def median_comparison(runs: dict[str, list[str]] = COST_RUNS_2, rates: tuple[float, ...] = COST_RATES) -> str:
    """Like cost_comparison, for sides that ran several times: each cell is the median over a
    side's runs, and the total's row gives the runs' range, so a difference can be read
    against the noise between runs of the same code."""
    found = {label: _load(names) for label, names in runs.items()}
    lines = _cpu_table(found, rates, "CPU-ms per order, median", with_range=True)
    sides = "; ".join(
        f"{label}: " + ", ".join(_link(name, r) for name, r in zip(runs[label], results, strict=True))
        for label, results in found.items()
    )
    return "\n".join([*lines, "", f"Runs ({len(next(iter(runs.values())))} per side): {sides}."])


def runs_in_order(runs: dict[str, list[str]] = COST_RUNS_2, rate: float = 10.0) -> str:
    """Each run's totals at `rate` in the order the runs started, with the roles no cut
    touched (the load generator, the SMTP sink): what drifts between runs of the same code."""
    rows = []
    for label, names in runs.items():
        for r in _load(names):
            e = next(e for e in r["s3"]["runs"] if e["rate"] == rate)
            cpu = e["cpu_ms_per_order"]
            rows.append((r["started"], label, excluding_load(e), cpu["load generator"], cpu["SMTP sink"]))
    lines = [
        f"| run started (UTC) | side | all but the load generator, {rate:.0f}/s | load generator | SMTP sink |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {started[11:16]} | {label} | {total:.1f} | {load:.1f} | {sink:.1f} |"
        for started, label, total, load, sink in sorted(rows)
    ]
    return "\n".join(lines)


def cuts_table(
    runs: dict[str, str] = COST_RUNS, cuts: list[tuple[str, str, list[str]]] = PROFILE_CUTS
) -> str:
    stems = {label: name.removesuffix(".json") for label, name in runs.items()}
    return profiles.share_table(RESULTS, stems, cuts)
