"""Flower as started by `manage.py run_flower`: basic auth, refusal without credentials,
history that survives a restart (persistent mode)."""

import subprocess
import sys
import uuid

import pytest
import requests

from config.celery_app import app as celery_app
from tests.harness import ROOT, child_env, free_port, wait_until
from tests.probe.tasks import records

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = ("ops", "flower-test-password")


def start_flower(procs, port: int, db: str):
    return procs.spawn(
        "flower",
        [sys.executable, "manage.py", "run_flower"],
        FLOWER_PORT=str(port),
        FLOWER_BASIC_AUTH=":".join(AUTH),
        FLOWER_DB=db,
        FLOWER_REQUIRE_AUTH="1",
    )


def get(port: int, path: str, **kwargs):
    try:
        return [requests.get(f"http://127.0.0.1:{port}{path}", timeout=5, **kwargs)]
    except requests.ConnectionError:
        return None


def run_flower(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`manage.py run_flower` as a process of its own, for the refusals it makes before starting."""
    return subprocess.run(
        [sys.executable, "manage.py", "run_flower"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_flower_refuses_to_start_without_credentials():
    env = child_env(FLOWER_REQUIRE_AUTH="1", FLOWER_PORT=str(free_port()))
    env.pop("FLOWER_BASIC_AUTH", None)
    result = run_flower(env)
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr


def test_flower_needs_basic_auth_and_keeps_its_history_across_a_restart(isolated, tmp_path):
    port, db = free_port(), str(tmp_path / "flower.db")
    flower = start_flower(isolated, port, db)
    [anonymous] = wait_until(lambda: get(port, "/"), timeout=40, message="Flower to answer")
    assert anonymous.status_code == 401
    assert get(port, "/api/tasks")[0].status_code == 401
    assert get(port, "/", auth=("ops", "wrong"))[0].status_code == 401
    assert get(port, "/", auth=AUTH)[0].status_code == 200
    # when a task runs while Flower watches
    isolated.worker("flowered")
    key, task_id = uuid.uuid4().hex, str(uuid.uuid4())
    celery_app.send_task("probe.record", kwargs={"key": key}, task_id=task_id, queue="default")
    wait_until(lambda: records(key), message="the task")
    wait_until(
        lambda: task_id in get(port, "/api/tasks", auth=AUTH)[0].json(), message="Flower to see the task"
    )
    # then after a restart Flower still knows it
    flower.stop()
    start_flower(isolated, port, db)
    [tasks] = wait_until(
        lambda: get(port, "/api/tasks", auth=AUTH), timeout=40, message="Flower to answer again"
    )
    assert task_id in tasks.json()
    assert tasks.json()[task_id]["state"] == "SUCCESS"


@pytest.mark.parametrize("auth", ["ops:", "ops:short", ":" + "p" * 20, "ops:" + "p" * 20 + ",dev:weak"])
def test_flower_refuses_an_empty_or_short_password(auth):
    result = run_flower(
        child_env(FLOWER_REQUIRE_AUTH="1", FLOWER_PORT=str(free_port()), FLOWER_BASIC_AUTH=auth)
    )
    assert result.returncode != 0
    assert "at least 16 characters" in result.stderr
