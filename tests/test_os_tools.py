"""Tests that need an OS tool (Chromium, promtool, RabbitMQ) skip on a developer's machine
without it, and fail in CI, where a skip would let a missing install pass unseen."""

import sys
from pathlib import Path

import pytest

from tests.harness import require_os_tool

MISSING = "taskyard-no-such-tool"


def test_a_missing_tool_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Debian package taskyard-pkg"):
        require_os_tool(MISSING, package="taskyard-pkg")


def test_a_missing_tool_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run this test"):
        require_os_tool(MISSING, package="taskyard-pkg")


def test_a_present_tool_is_found_by_any_of_its_names(monkeypatch):
    monkeypatch.setenv("CI", "true")
    bin_dir = Path(sys.executable).parent
    monkeypatch.setenv("PATH", str(bin_dir))
    assert require_os_tool(MISSING, "python", package="python3") == str(bin_dir / "python")
