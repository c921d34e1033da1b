"""Probes against real dependencies; an unreachable one is made so by a wrong port."""

import sys

import pytest
import requests

from config.celery_app import app as celery_app
from tests.harness import Processes, child_env, free_port, wait_until

pytestmark = pytest.mark.django_db


def test_healthz(anon):
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_all_up(anon):
    response = anon.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ready"
    assert {k for k, v in body["checks"].items() if v["ok"]} == {"database", "redis", "broker"}


def test_readyz_redis_down(anon, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = anon.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["redis"]


def test_readyz_broker_down(anon, monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_url", f"redis://127.0.0.1:{free_port()}/0")
    response = anon.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["broker"]


def test_readyz_database_down_in_a_real_server(tmp_path):
    # given a web process whose DATABASE_URL points at a port where nothing listens
    procs = Processes(tmp_path, child_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nope"))
    port = free_port()
    try:
        web = procs.spawn(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
        )

        def answer():
            try:
                return [requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)]
            except requests.ConnectionError:
                return None

        [response] = wait_until(answer, timeout=30, message="gunicorn to answer")
        # then it is alive but not ready, and says why
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert response.status_code == 503
        assert response.json()["failed"] == ["database"], web.log()[-2000:]
    finally:
        procs.stop_all()
