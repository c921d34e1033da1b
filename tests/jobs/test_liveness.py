"""Health-check commands for containers: worker answers a ping, beat ticked recently."""

import subprocess
import sys

import pytest

from jobs.scheduling.beat import HEARTBEAT_KEY
from tests.harness import ROOT, child_env, redis_client, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_worker_alive_answers_for_a_running_worker_only(live):
    node = live.worker.nodename
    ok = manage("worker_alive", "--node", node)
    assert ok.returncode == 0, ok.stderr
    assert node in ok.stdout
    assert manage("worker_alive", "--node", "nobody@nowhere", "--timeout", "1").returncode == 1


def test_beat_alive_follows_the_heartbeat_of_a_real_beat(isolated, tmp_path):
    redis_client().delete(HEARTBEAT_KEY)
    assert manage("beat_alive").returncode == 1
    isolated.spawn(
        "beat",
        [
            sys.executable, "-m", "celery", "-A", "config", "beat", "-S", "jobs.scheduling.beat:HeartbeatScheduler",
            "--schedule", str(tmp_path / "schedule"), "--pidfile", str(tmp_path / "beat.pid"),
        ],
    ).wait_for_log("beat: Starting...")  # fmt: skip
    wait_until(lambda: redis_client().get(HEARTBEAT_KEY), message="beat's first tick")
    result = manage("beat_alive", "--max-age", "30")
    assert result.returncode == 0, result.stderr
    assert "beat alive" in result.stdout


def test_relay_alive_follows_the_relay_loop(live):
    # the relay goes round its loop at least once per poll interval (1 s); the stack may
    # have just (re)started it, so the key can still hold the previous relay's old beat
    def fresh() -> subprocess.CompletedProcess[str] | None:
        result = manage("relay_alive", "--max-age", "10")
        return result if result.returncode == 0 else None

    alive = wait_until(fresh, timeout=20, message="a fresh relay heartbeat")
    assert "relay alive" in alive.stdout
    assert manage("relay_alive", "--max-age", "0").returncode == 1
