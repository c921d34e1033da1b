"""One order is one trace, across the web, relay and worker processes, through the outbox.

The stack exports over OTLP/HTTP to a real collector process; these tests read what it received.
"""

import itertools
import json
from typing import Any

import pytest
import requests
from rest_framework.authtoken.models import Token

from jobs.dead_letters import dead_letter_replay
from jobs.models import DeadLetter
from tests.harness import wait_until
from tests.sentry_ingest import SentryIngest

pytestmark = pytest.mark.django_db(transaction=True)

EMAIL_TASK = "run orders.send_confirmation_email"
PDF_TASK = "run orders.render_invoice_pdf"


def named(spans: list[dict[str, Any]], name: str, **attributes: Any) -> list[dict[str, Any]]:
    return [
        s
        for s in spans
        if s["name"] == name and all(s["attributes"].get(k) == v for k, v in attributes.items())
    ]


def create_order(traced, user, query: str = "") -> dict[str, Any]:
    token = Token.objects.create(user=user)
    response = requests.post(
        f"{traced.web_url}/api/orders{query}",
        json={"lines": [{"sku": "MUG-RED", "quantity": 2, "unit_price": "9.99", "currency": "EUR"}]},
        headers={"Authorization": f"Token {token.key}", "User-Agent": f"tests ({user.email})"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_one_order_is_one_trace_across_web_relay_and_worker(traced, user):
    order = create_order(traced, user, query=f"?note={user.email}")
    task_kw = {"taskyard.task.order_id": order["id"]}

    def complete(spans):
        done = named(spans, "smtp send") and named(spans, "invoice render pdf")
        return done and named(spans, EMAIL_TASK, **task_kw) and named(spans, PDF_TASK, **task_kw) and spans

    spans = traced.wait_for(complete, "the email and PDF task spans")
    by_id = {s["span_id"]: s for s in spans}
    [request] = [s for s in spans if s["kind"] == "server" and "orders" in s["name"]]
    trace_id = request["trace_id"]
    assert request["service"] == "taskyard-web"

    # the outbox write is part of the request
    [write] = named(spans, "outbox write")
    assert write["trace_id"] == trace_id
    assert write["attributes"]["taskyard.outbox.rows"] == 3

    # each task run is a child of the request, in another process
    [email] = named(spans, EMAIL_TASK, **task_kw)
    [pdf] = named(spans, PDF_TASK, **task_kw)
    for task in (email, pdf):
        assert task["trace_id"] == trace_id
        assert task["service"] == "taskyard-worker"
        assert task["parent_is_remote"]
        assert by_id[task["parent_span_id"]]["service"] == "taskyard-web"
        assert task["attributes"]["taskyard.task.outcome"] == "succeeded"
    # and the effects are children of the task runs
    [smtp] = named(spans, "smtp send")
    assert (smtp["trace_id"], smtp["parent_span_id"], smtp["kind"]) == (trace_id, email["span_id"], "client")
    [render] = named(spans, "invoice render pdf")
    assert (render["trace_id"], render["parent_span_id"]) == (trace_id, pdf["span_id"])
    assert any(s["trace_id"] == trace_id and s["attributes"].get("db.system") for s in spans)  # SQL too

    # the relay's publish is a trace of its own, linked to the order's; each task links back to it
    publishes = [
        s for s in named(spans, "outbox publish") if any(lk["trace_id"] == trace_id for lk in s["links"])
    ]
    assert publishes
    assert all(p["service"] == "taskyard-relay" and p["trace_id"] != trace_id for p in publishes)
    for task in (email, pdf):
        [link] = [lk for lk in task["links"] if lk["attributes"]["taskyard.link.reason"] == "publish"]
        assert link["span_id"] in {p["span_id"] for p in publishes}
    assert {"taskyard-web", "taskyard-relay", "taskyard-worker"} <= {s["service"] for s in spans}

    # no PII: the user's email was in the query string and the user agent
    assert user.email not in json.dumps(spans)
    assert "note=" not in json.dumps(request["attributes"])

    # log lines carry the trace: the worker's JSON line about this email names the trace and span
    def email_log_line():
        for line in traced.worker.log().splitlines():
            if line.startswith("{") and f"for order:{order['id']} sent" in line:
                return json.loads(line)
        return None

    record = wait_until(email_log_line, message="the email's log line")
    assert (record["trace_id"], record["span_id"]) == (trace_id, email["span_id"])


def test_each_retry_is_an_attempt_of_the_same_trace_and_a_replay_links_back(traced, user):
    ingest = SentryIngest()
    try:
        traced.worker.stop()
        traced.procs.worker("traced-sentry", SENTRY_DSN=ingest.dsn)
        traced.sink.set_mode("fail-4xx")
        order = create_order(traced, user)
        task_kw = {"taskyard.task.order_id": order["id"]}
        traced.wait_for(lambda spans: len(named(spans, EMAIL_TASK, **task_kw)) >= 2, "two failed attempts")
        traced.sink.set_mode("fail-5xx")  # the next attempt fails for good: a dead letter
        dead = wait_until(
            lambda: DeadLetter.objects.filter(task_name="orders.send_confirmation_email").first(),
            message="the dead letter",
        )
        attempts = traced.wait_for(
            lambda spans: (
                found := named(spans, EMAIL_TASK, **task_kw),
                found
                if any(s["attributes"].get("taskyard.task.outcome") == "dead_lettered" for s in found)
                else None,
            )[1],
            "the dead-lettered attempt's span",
        )
        attempts.sort(key=lambda s: s["attributes"]["taskyard.task.attempt"])
        trace_id = attempts[0]["trace_id"]
        assert [s["attributes"]["taskyard.task.attempt"] for s in attempts] == list(
            range(1, len(attempts) + 1)
        )
        for previous, attempt in itertools.pairwise(attempts):
            # same trace and parent (the request), linked to the attempt before it
            assert (attempt["trace_id"], attempt["parent_span_id"]) == (
                trace_id,
                attempts[0]["parent_span_id"],
            )
            assert attempt["attributes"]["taskyard.link.reason"] == "retry"
            assert {"trace_id": trace_id, "span_id": previous["span_id"]}.items() <= next(
                lk for lk in attempt["links"] if lk["attributes"]["taskyard.link.reason"] == "retry"
            ).items()
            assert previous["status"]["code"] == 2  # each failed attempt is an error span
            assert any(e["name"] == "exception" for e in previous["events"])
        last = attempts[-1]

        # the Sentry event of the dead letter leads to that attempt's span
        [event] = wait_until(
            lambda: [e for e in ingest.events() if e["tags"]["task"] == "orders.send_confirmation_email"],
            timeout=30,
            message="the Sentry event",
        )
        assert event["tags"]["trace_id"] == trace_id
        assert (event["contexts"]["trace"]["trace_id"], event["contexts"]["trace"]["span_id"]) == (
            trace_id,
            last["span_id"],
        )

        # a replay from the admin is a new run that links back to the attempt that was dead-lettered
        traced.sink.set_mode("ok")
        replay_id = dead_letter_replay(dead_letter_id=dead.pk, actor=None)
        [replay] = traced.wait_for(
            lambda spans: [
                s for s in named(spans, EMAIL_TASK) if s["attributes"]["messaging.message.id"] == replay_id
            ],
            "the replay's span",
        )
        assert replay["attributes"]["taskyard.link.reason"] == "replay"
        [link] = [lk for lk in replay["links"] if lk["attributes"]["taskyard.link.reason"] == "replay"]
        assert (link["trace_id"], link["span_id"]) == (trace_id, last["span_id"])
        assert replay["attributes"]["taskyard.task.outcome"] == "succeeded"
    finally:
        ingest.close()
