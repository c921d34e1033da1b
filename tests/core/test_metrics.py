"""/metrics: protected, Prometheus text, figures that move when work happens."""

import subprocess
import sys
import uuid

import pytest
from django.db import transaction
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from jobs import outbox
from tests.harness import ROOT, child_env, wait_until
from tests.jobs.test_admin import make_dead_letter
from tests.probe.tasks import records

pytestmark = pytest.mark.django_db


def scrape(client, **extra) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_a_token_or_an_allowed_address(client, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    outside = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.get("/metrics", **outside).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **outside).status_code == 403
    assert (
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token", **outside).status_code == 200
    )
    assert client.get("/metrics").status_code == 200  # 127.0.0.1 is on the default allow-list


def test_http_requests_are_counted_by_route(client, api):
    before = scrape(client)
    for _ in range(3):
        api.get("/api/me")
    after = scrape(client)
    labels = {"method": "GET", "route": "api/me", "status": "200"}
    assert (
        value(after, "taskyard_http_requests_total", **labels)
        - value(before, "taskyard_http_requests_total", **labels)
        == 3
    )
    assert value(after, "taskyard_http_request_duration_seconds_count", method="GET", route="api/me") >= 3


def test_dead_letters_are_counted_per_fingerprint(client):
    first = make_dead_letter("vendor rejected order 1")
    make_dead_letter("vendor rejected order 2")
    samples = scrape(client)
    assert (
        value(samples, "taskyard_dead_letters_open", task="probe.record", fingerprint=first.fingerprint) == 2
    )


def test_fx_staleness_is_infinite_without_any_sync(client):
    assert value(scrape(client), "taskyard_fx_rates_age_seconds") == float("inf")


@pytest.mark.django_db(transaction=True)
def test_task_counters_and_runtimes_move_when_tasks_run(live, client):
    # the worker's pool children write to the same multiprocess directory as this process
    before = scrape(client)
    keys = [uuid.uuid4().hex for _ in range(5)]
    with transaction.atomic(), outbox.batch():
        for key in keys:
            outbox.enqueue("probe.record", kwargs={"key": key})
    wait_until(lambda: all(records(k) for k in keys), message="five tasks")
    live.wait_idle()
    after = scrape(client)
    for outcome in ("started", "succeeded"):
        moved = value(after, "taskyard_tasks_total", task="probe.record", outcome=outcome) - value(
            before, "taskyard_tasks_total", task="probe.record", outcome=outcome
        )
        assert moved == 5, outcome
    assert (
        value(after, "taskyard_task_runtime_seconds_count", task="probe.record")
        - value(before, "taskyard_task_runtime_seconds_count", task="probe.record")
        == 5
    )
    assert (
        value(after, "taskyard_outbox_published_total") - value(before, "taskyard_outbox_published_total")
        >= 5
    )
    assert value(after, "taskyard_workers_alive") >= 1


@pytest.mark.django_db(transaction=True)
def test_outbox_backlog_then_queue_depth_and_oldest_age(isolated, client):
    # given no relay and no worker: enqueued rows wait in the outbox
    with transaction.atomic(), outbox.batch():
        for _ in range(4):
            outbox.enqueue("probe.record", kwargs={"key": uuid.uuid4().hex})
    samples = scrape(client)
    assert value(samples, "taskyard_outbox_backlog") == 4
    assert value(samples, "taskyard_outbox_oldest_unsent_age_seconds") >= 0
    assert value(samples, "taskyard_queue_depth", queue="default") == 0
    # when a relay publishes them (and still no worker consumes)
    isolated.relay()
    wait_until(lambda: value(scrape(client), "taskyard_outbox_backlog") == 0, message="the relay to publish")
    # then they wait in the broker, and the oldest one has an age
    samples = wait_until(
        lambda: (
            (s := scrape(client))
            and value(s, "taskyard_queue_oldest_message_age_seconds", queue="default") > 0
            and s
        ),
        message="a measurable queue age",
    )
    assert value(samples, "taskyard_queue_depth", queue="default") == 4
    assert value(samples, "taskyard_queue_depth", queue="emails") == 0


def test_a_process_that_imported_prometheus_client_before_the_settings_still_shares_its_figures():
    # given a process started like `celery -A config worker` under `make run` or the Procfile:
    # prometheus_client already imported (Flower's CLI plugin does it) when the settings set
    # PROMETHEUS_MULTIPROC_DIR, which is not in its environment
    env = {k: v for k, v in child_env().items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    code = (
        "import os, prometheus_client, django\n"
        "assert 'PROMETHEUS_MULTIPROC_DIR' not in os.environ\n"
        "django.setup()\n"
        "from jobs.task_metrics import TASK_EVENTS\n"
        "TASK_EVENTS.labels(task='probe.imported_first', outcome='succeeded').inc()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    # then its counter is in the shared directory, where /metrics adds up every process
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(shared_registry()).decode())
    }
    samples = families["taskyard_tasks"].samples
    assert any(s.labels.get("task") == "probe.imported_first" and s.value == 1 for s in samples)


def shared_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry
