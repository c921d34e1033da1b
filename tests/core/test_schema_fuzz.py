"""The published OpenAPI schema is the API's contract, checked by schemathesis with every check.

`test_the_schema_is_the_contract` is what `schemathesis run --checks all` does (the examples,
coverage, fuzzing and stateful phases, every check, 50 examples per operation at least), run
in-process by schemathesis' own engine against gunicorn serving the test database, as a user
who owns an order, a KYC submission and an export job (a seeded id is drawn for half of the
object routes' path parameters, so those routes answer with real objects, not only 404s).
Anonymous fuzzing must get only 401s; another user fuzzing the owner's object routes only 404s.

Where a check cannot apply to an operation as the schema states it, CONFIG says so and why.
Set TASKYARD_FUZZ_SEED to replay a run (its seed is in the failure message).
"""

import io
import os
import random
import time
from collections import Counter, defaultdict
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
import requests
import schemathesis
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from rest_framework.authtoken.models import Token
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events

from fulfilment.services import fulfilment_start
from jobs.models import Flow, Job
from kyc.documents import inspect_all
from kyc.models import DocumentType
from kyc.services import kyc_submission_start
from orders import exports, services
from orders.currencies import max_amount, quantum
from orders.models import Order

MAX_EXAMPLES = 50  # per operation and phase: the floor the API contract asks for
ORDERS = "POST /api/orders/"
EXPORT = "POST /api/orders/export"
KYC = "POST /api/kyc/submissions/"
FULFIL = "POST /api/orders/{order_id}/fulfil"
TOKEN = "POST /api/auth/token"


# --- the documents a fuzzer cannot make up ------------------------------------------------------
def _image(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, format=fmt)
    return buffer.getvalue()


PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
# Random bytes are never a readable passport scan: the upload's files are drawn from real
# documents of each accepted type (schemathesis still mutates everything else in the request).
schemathesis.openapi.media_type("application/pdf", st.just(PDF))
schemathesis.openapi.media_type(
    "image/png", st.sampled_from([_image("PNG", (200, 240)), _image("PNG", (640, 480))])
)
schemathesis.openapi.media_type("image/jpeg", st.just(_image("JPEG", (300, 200))))


def published_schema(web: str, token: str) -> dict[str, Any]:
    """The schema as gunicorn serves it at /api/schema/ (the schema needs authentication too)."""
    headers = {"Authorization": f"Token {token}", "Accept": "application/vnd.oai.openapi+json"}
    response = requests.get(f"{web}/api/schema/", headers=headers, timeout=30)
    response.raise_for_status()
    document = dict(response.json())
    # The tests' URLconf adds probe views under /api/probe; they are not part of the product.
    document["paths"] = {p: ops for p, ops in document["paths"].items() if not p.startswith("/api/probe/")}
    return document


# --- configuration: everything on, and each exception with its reason ---------------------------
def config(base_url: str, token: str, seeded: dict[str, list[Any]], seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "base-url": base_url,
        "headers": {"Authorization": f"Token {token}"},
        "continue-on-failure": True,
        "generation": {"max-examples": MAX_EXAMPLES},
        "checks": {"enabled": True},
        "phases": {"stateful": {"max-steps": 10}},
        "dictionaries": {name: {"values": values} for name, values in seeded.items()},
        "parameters": {f"path.{name}": {"dictionary": name, "probability": 0.5} for name in seeded},
        "workers": 2,  # two operations at a time: the generator and gunicorn share the two cores
    }


# Refusals the schema states but a generator cannot avoid, dropped one by one (a per-operation
# `expected-statuses` would excuse every 400 of the operation):
EXPECTED_REFUSALS = {
    # A well-formed username and password that belong to nobody: a fuzzer cannot know a password.
    (TOKEN, 400, "invalid-credentials"),
    # The generator reuses short keys ("0") for different requests; the header's description
    # says that is refused, and a client makes a new key for each new request.
    *((operation, 422, "idempotency-key-reused") for operation in (ORDERS, KYC, EXPORT, FULFIL)),
}


EMPTY_DOCUMENT_TYPE = b'name="document_type"\r\n\r\n\r\n'


def expected_refusal(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """filter_failure: False drops a positive-data failure that is one of EXPECTED_REFUSALS, and a
    negative case the server refused with 413 or 414: its body was over the size cap
    (core/body_limit.py) or its URL over gunicorn's request-line limit, refusals schemathesis
    doesn't count as one (refused unread, before any validation)."""
    if failure.title.startswith("Schema-violating request accepted"):
        return response.status_code not in (413, 414)
    if not failure.title.startswith("Schema-valid request rejected"):
        return True
    try:
        problem = response.json()
    except ValueError:
        return True
    if case.operation.label == KYC and set(problem.get("errors", {})) == {"document_type"}:
        # schemathesis 4.32.5's coverage phase sends some "valid" uploads with an empty
        # document_type (an enum: never valid); the server is right to refuse those.
        return EMPTY_DOCUMENT_TYPE not in (response.request.body or b"")
    return (case.operation.label, response.status_code, problem.get("code")) not in EXPECTED_REFUSALS


def positive_as_documented(context: Any, case: Any) -> Any:
    """map_case for positive cases only (negative ones stay as generated):

    * an upload's `files` drawn from a document strategy comes as one value, not the documented
      array, and then goes out without a filename (schemathesis 4.32.5): wrap it in the array;
    * orders keep the rules the operation states in prose (one currency per order, the
      currency's decimal places, totals an order can hold): JSON Schema cannot express them, a
      client must keep them, so the generator keeps them too.
    """
    if case.meta is None or case.meta.generation.mode.is_negative:
        return case
    if (
        case.operation.label == KYC
        and isinstance(case.body, dict)
        and isinstance(case.body.get("files"), bytes)
    ):
        case.body["files"] = [case.body["files"]]
    if case.operation.label != ORDERS:
        return case
    lines = case.body.get("lines") if isinstance(case.body, dict) else None
    if not isinstance(lines, list) or not lines or not all(isinstance(line, dict) for line in lines):
        return case
    currency = lines[0].get("currency")
    if currency is None:
        return case
    step = quantum(currency)
    share = (max_amount(currency) / len(lines)).quantize(step, ROUND_DOWN)  # each line's part of the most
    for line in lines:
        line["currency"] = currency
        if isinstance(line.get("unit_price"), str) and isinstance(line.get("quantity"), int):
            price = min(max(Decimal(line["unit_price"]).quantize(step, ROUND_DOWN), step), share)
            line["unit_price"] = str(price)
            line["quantity"] = max(1, min(line["quantity"], int(share // price)))
    return case


def _run(schema: Any) -> tuple[Counter[str], dict[tuple[str, str], list[str]], float]:
    """Every phase of `schemathesis run`, in-process; cases per operation and failures per check."""
    cases: Counter[str] = Counter()
    failures: dict[tuple[str, str], list[str]] = defaultdict(list)
    started = time.monotonic()
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            cases[event.recorder.label] += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        key = (event.recorder.label, f"{check.name}: {failure.title}")
                        failures[key].append(f"{failure.message}\n{check.failure_info.code_sample}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures[(getattr(event, "label", "engine"), "error")].append(
                repr(getattr(event, "value", event))
            )
        elif isinstance(event, events.EngineFinished):
            for failure in event.failures:
                failures[("run", failure.title)].append(failure.message)
    return cases, failures, time.monotonic() - started


def _report(failures: dict[tuple[str, str], list[str]], seed: int) -> str:
    lines = [f"{len(failures)} kinds of failure (TASKYARD_FUZZ_SEED={seed} replays this run):"]
    for (label, check), found in sorted(failures.items()):
        lines.append(f"\n== {label} | {check} (x{len(found)})\n{found[0][:1500]}")
    return "\n".join(lines)


# --- fixtures --------------------------------------------------------------------------------
def seed_objects(owner: User) -> dict[str, list[Any]]:
    """An unpaid and a paid order, a KYC submission, an export job and a fulfilment flow (of a
    third order, so the paid one can still be fulfilled): the object routes' ids."""
    line = services.LineInput(sku="MUG-1", quantity=2, unit_price=Decimal("9.99"), currency="EUR")
    unpaid = services.order_create(user=owner, lines=[line])
    paid = services.order_create(user=owner, lines=[line])
    services.order_pay(user=owner, order_id=paid.pk)
    scan = SimpleUploadedFile("scan.pdf", PDF, content_type="application/pdf")
    submission = kyc_submission_start(
        user=owner, document_type=DocumentType.PASSPORT, documents=inspect_all([scan])
    )
    job = exports.order_export_start(user=owner)
    shipped = services.order_create(user=owner, lines=[line])
    services.order_pay(user=owner, order_id=shipped.pk)
    flow = fulfilment_start(user=owner, order_id=shipped.pk)
    return {
        "order_id": [unpaid.pk, paid.pk],
        "submission_id": [str(submission.pk)],
        "job_id": [str(job.id)],
        "flow_id": [str(flow.pk)],
    }


@pytest.mark.django_db(transaction=True)
def test_the_schema_is_the_contract(web, make_user):
    owner = make_user("fuzzer")
    seeded = seed_objects(owner)
    seed = int(os.environ.get("TASKYARD_FUZZ_SEED") or random.getrandbits(32))
    token = Token.objects.create(user=owner).key
    document = published_schema(web, token)
    loaded = schemathesis.openapi.from_dict(
        document, config=SchemathesisConfig.from_dict(config(web, token, seeded, seed))
    )
    loaded.hook("map_case")(positive_as_documented)
    loaded.hook("filter_failure")(expected_refusal)

    cases, failures, elapsed = _run(loaded)

    print(f"\nschemathesis: {sum(cases.values())} cases in {elapsed:.0f} s: {dict(cases)}")
    assert not failures, _report(failures, seed)
    operations = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
    assert operations <= set(cases), f"not reached: {operations - set(cases)}"
    assert min(cases[op] for op in operations) >= MAX_EXAMPLES, cases
    assert cases["Stateful tests"] > 0
    assert Order.objects.filter(owner=owner).count() > 2  # positive orders were accepted, not only refused


# --- anonymous and cross-user: only 401, only 404 ------------------------------------------------
def _operations(document: dict[str, Any]) -> list[Any]:
    loaded = schemathesis.openapi.from_dict(document)
    return [result.ok() for result in loaded.get_all_operations()]  # type: ignore[union-attr]


def _fuzz(operation: Any, send: Any, examples: int) -> Counter[int]:
    statuses: Counter[int] = Counter()

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        statuses[send(case)] += 1

    run()
    return statuses


@pytest.mark.django_db(transaction=True)
def test_anonymous_requests_get_only_401(web, make_user):
    owner = make_user("owner")
    seed_objects(owner)
    document = published_schema(web, Token.objects.create(user=owner).key)
    seen: dict[str, Counter[int]] = {}
    for operation in _operations(document):
        if operation.label == TOKEN:
            continue  # the one open operation: its credentials are in the body
        seen[operation.label] = _fuzz(operation, lambda case: case.call(base_url=web).status_code, 20)
    assert all(set(statuses) == {401} for statuses in seen.values()), seen


@pytest.mark.django_db(transaction=True)
def test_another_users_requests_to_the_owners_objects_get_only_404(web, make_user):
    owner, other = make_user("owner"), make_user("mallory")
    seeded = seed_objects(owner)
    before = {o.pk: o.status for o in Order.objects.filter(owner=owner)}
    headers = {"Authorization": f"Token {Token.objects.create(user=other).key}"}
    document = published_schema(web, Token.objects.create(user=owner).key)

    def send(case: Any) -> int:
        for name in case.path_parameters:
            case.path_parameters[name] = random.choice(seeded[name])
        return int(case.call(base_url=web, headers=headers).status_code)

    seen = {
        operation.label: _fuzz(operation, send, 20)
        for operation in _operations(document)
        if any(parameter.location == "path" for parameter in operation.iter_parameters())
    }
    assert len(seen) == 11, seen
    assert all(set(statuses) == {404} for statuses in seen.values()), seen
    assert {o.pk: o.status for o in Order.objects.filter(owner=owner)} == before
    assert Job.objects.get(pk=seeded["job_id"][0]).owner == owner
    assert Flow.objects.get(pk=seeded["flow_id"][0]).cancel_requested_at is None  # mallory's cancels: 404
