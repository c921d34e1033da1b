"""The Prometheus alert rules are valid and only use metrics the service exports."""

import re
import subprocess
from pathlib import Path

import yaml

from tests.harness import require_os_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RUNBOOKS = "docs/operations.md"  # each alert's section: what to check, what to do
EXPORTED = {
    "taskyard_queue_oldest_message_age_seconds",
    "taskyard_queue_depth",
    "taskyard_dead_letters_open",
    "taskyard_outbox_oldest_unsent_age_seconds",
    "taskyard_outbox_backlog",
    "taskyard_fx_rates_age_seconds",
    "taskyard_workers_alive",
    "taskyard_tasks_total",
}


def heading_anchors(markdown: str) -> set[str]:
    """The anchors a Markdown renderer gives the headings (GitHub's rule: lower case, spaces
    to hyphens, punctuation dropped)."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_rules_cover_the_required_alerts_and_point_to_a_runbook():
    names = {rule["alert"] for rule in rules()}
    assert {
        "TaskyardQueueStalled",
        "TaskyardDeadLettersOpen",
        "TaskyardOutboxBacklogGrowing",
        "TaskyardFxRatesStale",
        "TaskyardNoWorkerHeartbeat",
    } <= names
    sections = heading_anchors((ROOT / RUNBOOKS).read_text())
    for rule in rules():
        assert {"expr", "for", "labels", "annotations"} <= set(rule), rule["alert"]
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert path == RUNBOOKS, rule["alert"]
        assert anchor == f"alert-{rule['alert'].lower()}", rule["alert"]
        assert anchor in sections, f"{RUNBOOKS} has no section '### alert-{rule['alert']}'"


def test_rules_only_use_exported_metrics():
    for rule in rules():
        used = set(re.findall(r"taskyard_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= EXPORTED, (rule["alert"], used - EXPORTED)


def test_promtool_accepts_the_rules():
    promtool = require_os_tool("promtool", package="prometheus")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
