"""The Prometheus alert rules are valid and only use metrics the service exports."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
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
    readme = (RULES.parents[2] / "README.md").read_text().lower()
    for rule in rules():
        assert {"expr", "for", "labels", "annotations"} <= set(rule), rule["alert"]
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert f"alert-{rule['alert'].lower()}" == anchor
        assert rule["alert"].lower() in readme, f"README has no runbook entry for {rule['alert']}"


def test_rules_only_use_exported_metrics():
    for rule in rules():
        used = set(re.findall(r"taskyard_[a-z_]+", rule["expr"]))
        assert used, rule["alert"]
        assert used <= EXPORTED, (rule["alert"], used - EXPORTED)


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_promtool_accepts_the_rules():
    result = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
