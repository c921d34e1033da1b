"""problem+json for every error the API returns, stable error texts, admin filters that never
500, metrics exporters behind a token, production settings by default."""

import json
import subprocess
import sys
import uuid

import pytest
import requests
from django.contrib import admin
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from core.problems import PROBLEM_CONTENT_TYPE, csrf_failure
from jobs.dead_letters import JOB_FAILURES, dead_letter_record
from jobs.execution import meta_from_headers
from jobs.services import job_create
from tests.harness import ROOT, Proc, child_env, free_port

pytestmark = pytest.mark.django_db


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body = json.loads(response.content)
    assert (body["status"], body["code"]) == (status, code)
    return body


def test_unknown_api_urls_are_problem_json_even_with_debug_on(api, settings):
    settings.DEBUG = True  # `make run`: Django would answer its HTML debug page
    for path in ("/api/no-such-thing", "/api/orders/12/nope", "/api/jobs"):
        assert_problem(api.get(path), 404, "not-found")


def test_a_method_the_route_does_not_allow_is_405_problem(api):
    assert_problem(api.put("/api/orders/", {}, format="json"), 405, "method-not-allowed")


def test_a_body_that_is_not_json_is_415_problem(api):
    response = api.post("/api/orders/", "lines=1", content_type="text/plain")
    assert_problem(response, 415, "unsupported-media-type")


def test_a_session_post_without_the_csrf_token_is_403_problem(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    body = assert_problem(client.post("/api/orders/", {"lines": []}, format="json"), 403, "permission-denied")
    assert "CSRF" in body["detail"]


def test_django_level_csrf_failures_under_api_are_problem_json():
    assert_problem(csrf_failure(RequestFactory().post("/api/orders/")), 403, "csrf-failed")
    assert csrf_failure(RequestFactory().post("/admin/login/"))["Content-Type"].startswith("text/html")


def test_a_request_for_a_host_we_do_not_serve_is_400_problem(anon):
    response = anon.get("/api/me", HTTP_HOST="evil.example")
    assert_problem(response, 400, "bad-request")
    assert b"evil.example" not in response.content  # nothing the client sent is echoed


def test_an_unhandled_exception_is_a_500_problem_without_its_text(user):
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    response = client.post("/api/probe/boom", {"email": "alice@example.test"}, format="json")
    body = assert_problem(response, 500, "server-error")
    assert "crashed" not in response.content.decode()
    assert "alice@example.test" not in response.content.decode()
    assert body["detail"] == "The error was logged."


def test_a_dead_job_shows_a_stable_code_and_message_not_the_exception(api, user):
    # given a job whose task died with an error that names the database host and user
    job = job_create(owner=user, kind="probe")
    meta = meta_from_headers(str(uuid.uuid4()), "probe.record", "default", {"job_id": str(job.id)})
    leak = RuntimeError('connection to server at "db.internal" (10.0.0.5), user "taskyard" failed')
    dead_letter_record(meta=meta, exc=leak, reason="exhausted", args=[], kwargs={}, alert=False)
    # then its owner sees the code and its fixed message, and nothing of the exception
    body = api.get(f"/api/jobs/{job.id}").json()
    assert body["state"] == "dead"
    assert (body["error_code"], body["error"]) == JOB_FAILURES["exhausted"]
    assert "db.internal" not in str(body)
    assert "RuntimeError" not in str(body)


@pytest.mark.parametrize("value", ["foo", "lt", "gt999d", "'; DROP TABLE x; --", "\x00", "lt1h" * 100])
def test_admin_filters_never_500_on_a_bad_query_string(make_user, settings, value):
    staff = make_user("filters-admin", is_staff=True, is_superuser=True)
    client = Client(raise_request_exception=False)
    client.force_login(staff)
    for model, model_admin in admin.site._registry.items():
        changelist = f"/{settings.ADMIN_URL}{model._meta.app_label}/{model._meta.model_name}/"
        parameters = [
            getattr(f, "parameter_name", f) for f in model_admin.list_filter if not isinstance(f, tuple)
        ]
        for parameter in [*parameters, "o", "q", "p"]:
            response = client.get(changelist, {str(parameter): value})
            assert response.status_code < 500, (changelist, parameter, value, response.status_code)


def exporter(isolated, **env: str) -> tuple[int, Proc]:
    port = free_port()
    relay = isolated.relay(f"relay-{port}", ["--no-reaper"], METRICS_EXPORTER_PORT=str(port), **env)
    relay.wait_for_log("metrics exporter on")
    return port, relay


def test_the_relays_exporter_needs_the_token_off_loopback(isolated):
    port, _ = exporter(isolated, METRICS_EXPORTER_ADDRESS="0.0.0.0", METRICS_TOKEN="t" * 32)  # noqa: S104
    url = f"http://127.0.0.1:{port}/metrics"
    assert requests.get(url, timeout=5).status_code == 403
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=5).status_code == 403
    allowed = requests.get(url, headers={"Authorization": f"Bearer {'t' * 32}"}, timeout=5)
    assert allowed.status_code == 200
    assert "taskyard_outbox_published_total" in allowed.text  # the relay's own counter


def test_without_a_token_the_exporter_stays_on_loopback(isolated):
    port, relay = exporter(isolated, METRICS_EXPORTER_ADDRESS="0.0.0.0", METRICS_TOKEN="")  # noqa: S104
    assert f"metrics exporter on 127.0.0.1:{port}" in relay.log()
    assert "no METRICS_TOKEN" in relay.log()
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = child_env()
    env.pop("DJANGO_SETTINGS_MODULE")
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_wsgi_and_the_celery_app_default_to_production_settings():
    celery = run_python("import os, config.celery_app; print(os.environ['DJANGO_SETTINGS_MODULE'])")
    assert celery.stdout.strip() == "config.settings.production", celery.stderr
    # production refuses to start without its secrets: proof it was chosen, not local settings
    wsgi = run_python("import config.wsgi")
    assert wsgi.returncode != 0
    assert "SECRET_KEY" in wsgi.stderr
