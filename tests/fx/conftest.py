"""The FX provider fake as a real subprocess, and the session stack pointed at it."""

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.conftest import Stack
from tests.harness import Proc, Processes, free_port


@dataclass
class FxProvider:
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def control(self, **settings: Any) -> dict[str, Any]:
        """Switch mode ("ok", "fail-5xx", "fail-timeout", "fail-4xx"), latency, hang, retry_after."""
        response = requests.post(f"{self.url}/control", data=json.dumps(settings), timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def stats(self) -> dict[str, Any]:
        return dict(requests.get(f"{self.url}/stats", timeout=5).json())

    def calls(self) -> int:
        return int(self.stats()["calls"])

    def reset(self) -> None:
        self.control(mode="ok", latency=0, hang=30, retry_after=None)
        requests.post(f"{self.url}/stats/reset", timeout=5).raise_for_status()


@pytest.fixture(scope="session")
def fx_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FxProvider]:
    procs = Processes(tmp_path_factory.mktemp("fx-provider"), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    port = free_port()
    proc = procs.spawn("fx-provider", [sys.executable, "-m", "fakes.fx_provider", "--port", str(port)])
    try:
        proc.wait_for_log("fx provider:")
        yield FxProvider(proc, port)
    finally:
        procs.stop_all()


@pytest.fixture
def fx(fx_provider: FxProvider, settings: Any) -> Iterator[FxProvider]:
    """The fake answering normally with its counters at zero; this process's client points at it."""
    fx_provider.reset()
    settings.FX_PROVIDER_URL = fx_provider.url
    yield fx_provider
    fx_provider.reset()


@pytest.fixture(scope="session")
def fx_stack_env(stack: Stack, fx_provider: FxProvider) -> None:
    """The session stack's worker reaches the fake (set before `live` starts the stack)."""
    stack.use_env(FX_PROVIDER_URL=fx_provider.url)


@pytest.fixture
def fx_live(fx_stack_env: None, fx: FxProvider, live: Stack) -> Stack:
    """The running stack (worker, relay) with its worker pointed at the FX fake."""
    return live
