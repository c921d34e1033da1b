"""python manage.py reliability_report: the results table of docs/reliability.md, from the
figures the chaos suite wrote (no hand-typed numbers).

    manage.py reliability_report --from var/chaos-results.json   # after `make chaos`: stamp the
                                                                  # run's results, commit them, render
    manage.py reliability_report                                  # render from the committed results
    manage.py reliability_report --check                          # exit 1 if the doc is stale

The committed results (docs/reliability-results.json) carry the commit the suite ran on and the
date; tests/test_docs.py fails when the doc differs from what this renders from them.
"""

import json
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

DOC = Path(settings.BASE_DIR) / "docs" / "reliability.md"
RESULTS = Path(settings.BASE_DIR) / "docs" / "reliability-results.json"
BEGIN, END = "<!-- results:begin (manage.py reliability_report) -->", "<!-- results:end -->"

# Table order: worker faults, relay and broker faults, stores down, failing tasks, RabbitMQ.
ORDER = [
    "worker-kill",
    "worker-sigstop",
    "beat-slot-kill",
    "warm-shutdown",
    "relay-kill",
    "broker-down",
    "broker-flushed",
    "postgresql-down",
    "smtp-down",
    "failing-tasks",
    "rabbitmq-worker-kill",
    "rabbitmq-beat-slot-kill",
    "rabbitmq-redis-down",
    "rabbitmq-poison",
    "fulfilment-flows",
]
# Figures with a column of their own; every other figure goes to "details".
COLUMNS = {
    "orders_accepted", "kyc_accepted", "slots_run", "confirmation_emails", "invoices_ready",
    "kyc_checks_at_vendor", "fx_provider_calls", "duplicate_emails", "task_bodies_run_again",
    "takeovers", "dead_letters", "emails_at_sink", "stuck_task_runs", "kyc_result_emails",
}  # fmt: skip
HEADER = (
    "| scenario | what was done | accepted | effects counted at the sinks | duplicate effects "
    "| task bodies run again (takeovers) | dead letters | details | time |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _joined(figures: dict[str, Any], parts: list[tuple[str, str]]) -> str:
    return ", ".join(f"{figures[key]} {label}" for key, label in parts if key in figures) or "-"


def row(result: dict[str, Any]) -> str:
    f = result["figures"]
    accepted = _joined(f, [("orders_accepted", "orders"), ("kyc_accepted", "KYC"), ("slots_run", "slots")])
    effects = _joined(
        f,
        [
            ("confirmation_emails", "confirmation emails"),
            ("invoices_ready", "invoices READY"),
            ("kyc_checks_at_vendor", "vendor checks"),
            ("kyc_result_emails", "KYC emails"),
            ("fx_provider_calls", "FX provider calls"),
        ],
    )
    duplicates = f.get("duplicate_emails", 0) + f.get("kyc_checks_at_vendor", 0) - f.get("kyc_accepted", 0)
    details = "; ".join(
        f"{k.replace('_', ' ')}: {_value(v)}" for k, v in sorted(f.items()) if k not in COLUMNS
    )
    cells = [
        f"**{result['title']}**",
        result["what"],
        accepted,
        effects,
        str(duplicates),
        f"{f.get('task_bodies_run_again', 0)} ({f.get('takeovers', 0)})",
        str(f.get("dead_letters", 0)),
        details or "-",
        f"{result['duration_seconds']:g} s",
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render(results: dict[str, Any]) -> str:
    scenarios: dict[str, Any] = results["scenarios"]
    keys = [k for k in ORDER if k in scenarios] + sorted(set(scenarios) - set(ORDER))
    total = sum(scenarios[k]["duration_seconds"] for k in keys)
    stamp = (
        f"Results of commit `{results['commit']}`{' (with uncommitted changes)' if results['dirty'] else ''}, "
        f"run on {results['date']} on a {results['cores']}-core machine; {len(keys)} scenarios, "
        f"{total:.0f} s of scenario time (`docs/reliability-results.json`)."
    )
    return "\n".join([BEGIN, stamp, "", HEADER, *(row(scenarios[k]) for k in keys), END])


def stamp(run: dict[str, Any]) -> dict[str, Any]:
    """The run's per-scenario results as the committed file: one commit and date for all."""
    commits = {r["commit"] for r in run.values()}
    if len(commits) != 1:
        raise CommandError(
            f"the results come from several commits {sorted(commits)}: run the whole suite again"
        )
    return {
        "commit": commits.pop(),
        "dirty": any(r["dirty"] for r in run.values()),
        "date": max(r["at"] for r in run.values())[:10],
        "cores": os.cpu_count(),
        "scenarios": {
            k: {n: v for n, v in r.items() if n not in {"commit", "dirty"}} for k, r in run.items()
        },
    }


def replace_section(doc: str, section: str) -> str:
    before, _, rest = doc.partition(BEGIN)
    _, _, after = rest.partition(END)
    return before + section + after


class Command(BaseCommand):
    help = "Render docs/reliability.md's results table from the chaos suite's results."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--from", dest="source", help="a chaos run's results (var/chaos-results.json)")
        parser.add_argument("--check", action="store_true", help="exit 1 when the doc is not what renders")

    def handle(self, *args: Any, source: str | None = None, check: bool = False, **options: Any) -> None:
        if source:
            RESULTS.write_text(
                json.dumps(stamp(json.loads(Path(source).read_text())), indent=1, sort_keys=True) + "\n"
            )
        doc = DOC.read_text()
        rendered = replace_section(doc, render(json.loads(RESULTS.read_text())))
        if check:
            if rendered != doc:
                raise CommandError("docs/reliability.md is stale: run `manage.py reliability_report`")
            return
        DOC.write_text(rendered)
        self.stdout.write(
            f"rendered {DOC.relative_to(settings.BASE_DIR)} from {RESULTS.relative_to(settings.BASE_DIR)}"
        )
