"""Fixtures of the chaos suite: a ChaosStack per scenario (tests/chaos/stack.py), the end
state both halves (tests/chaos/effects.py), and the results file docs/reliability.md is
rendered from (`manage.py reliability_report`).

Each scenario records its figures with `record_result`; a run writes them to
var/chaos-results.json, stamped with the commit it ran on. `manage.py reliability_report
--from var/chaos-results.json` copies them to docs/reliability-results.json and renders the doc.
"""

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests.chaos.stack import ChaosStack
from tests.harness import ROOT, Proc, children_of

RESULTS = ROOT / "var" / "chaos-results.json"
_started: dict[str, Any] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/chaos/" in str(item.fspath):
            item.add_marker(pytest.mark.chaos)
            # Under pytest-xdist the scenarios run one after another on one worker (`--dist
            # loadgroup`): two of them at once would make each other's recovery times.
            item.add_marker(pytest.mark.xdist_group("chaos"))


@pytest.fixture(autouse=True)
def _scenario_clock(request: pytest.FixtureRequest) -> None:
    _started["at"] = time.monotonic()
    _started["test"] = request.node.nodeid


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()


def record_result(key: str, *, title: str, what: str, **figures: Any) -> None:
    """One scenario's figures for docs/reliability.md: what was done and what was counted."""
    RESULTS.parent.mkdir(exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = {
        "title": title,
        "what": what,
        "test": _started.get("test", ""),
        "at": timezone.now().isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short=12", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "duration_seconds": round(time.monotonic() - _started.get("at", time.monotonic()), 1),
        "figures": figures,
    }
    RESULTS.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def chaos(stack: Any, transactional_db: None, tmp_path: Path) -> Iterator[Any]:
    """Builds a ChaosStack on demand (the shared test stack is stopped first)."""
    stack.stop()
    built: list[ChaosStack] = []

    def make(broker_url: str = "", *, kyc: bool = False, **env: str) -> ChaosStack:
        chaos_stack = ChaosStack(tmp_path / f"chaos{len(built)}", broker_url, kyc=kyc, **env)
        built.append(chaos_stack)
        return chaos_stack

    try:
        yield make
    finally:
        for chaos_stack in built:
            chaos_stack.stop()


def kill_group(proc: Proc) -> None:
    proc.signal_group(signal.SIGKILL)
    if proc.popen is not None:
        proc.popen.wait(timeout=10)


def kill_main_only(proc: Proc) -> list[int]:
    """SIGKILL a worker's main process alone; its pool children live on. Returns their pids
    (the caller ends them: they are no longer in a group anyone tracks)."""
    children = children_of(proc.pid)
    proc.popen.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    proc.popen.wait(timeout=10)  # type: ignore[union-attr]
    return children
