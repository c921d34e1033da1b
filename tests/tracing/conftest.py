"""A traced stack: a real OTLP/HTTP collector process (fakes/otlp_collector.py) and web,
relay and worker processes exporting to it through the standard OTEL_* variables."""

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Sink, start_sink
from tests.harness import Proc, Processes, free_port, wait_until


@dataclass
class Traced:
    procs: Processes
    collector_url: str
    web_url: str
    sink: Sink
    worker: Proc

    def spans(self) -> list[dict[str, Any]]:
        return list(requests.get(f"{self.collector_url}/spans", timeout=5).json())

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], Any], message: str) -> Any:
        return wait_until(lambda: predicate(self.spans()), timeout=30, interval=0.2, message=message)


def start_collector(procs: Processes) -> str:
    port = free_port()
    collector = procs.spawn(
        "otlp-collector", [sys.executable, "-m", "fakes.otlp_collector", "--port", str(port)]
    )
    collector.wait_for_log("otlp collector:")
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def traced(isolated: Processes, tmp_path: Path) -> Traced:
    collector_url = start_collector(isolated)
    isolated.base_env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=collector_url,
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: spans reach the collector quickly
        LOG_JSON="true",
        EMAIL_RETRY_BACKOFF_BASE="0.1",
        EMAIL_RETRY_BACKOFF_CAP="0.5",
    )
    sink = start_sink(isolated, tmp_path / "sink")
    isolated.base_env.update(EMAIL_PORT=str(sink.smtp_port))
    port = free_port()
    isolated.spawn(
        "web",
        [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
    )
    worker = isolated.worker("traced")
    isolated.relay()
    web_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return requests.get(f"{web_url}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(answers, timeout=30, message="gunicorn to answer")
    return Traced(isolated, collector_url, web_url, sink, worker)
