"""A typed Python client generated from the published schema (openapi-python-client) works
against gunicorn: it creates, lists, pays, cancels and exports orders, uploads KYC documents and
reads jobs, and every response parses into its generated model."""

import importlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.authtoken.models import Token

from tests.core.test_schema_fuzz import PDF, published_schema
from tests.harness import ROOT


@pytest.fixture
def client_package(web: str, make_user: Any, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    token = Token.objects.create(user=make_user("client")).key
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(published_schema(web, token)))
    generated = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(schema),
         "--output-path", str(tmp_path / "client"), "--meta", "none"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        package = importlib.import_module("client")
        authenticated = package.AuthenticatedClient(base_url=web, token=token, prefix="Token")
        yield package, authenticated
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "client" or m.startswith("client.")]:
            del sys.modules[name]


def call(package: Any, module: str, client: Any, status: int, **kwargs: Any) -> Any:
    api = importlib.import_module(f"client.api.{module}")
    response = api.sync_detailed(client=client, **kwargs)
    assert response.status_code == status, response.content
    assert response.parsed is not None, response.content  # parsed into the generated model
    return response.parsed


@pytest.mark.django_db(transaction=True)
def test_a_client_generated_from_the_schema_runs_every_flow(client_package):
    package, client = client_package
    models = importlib.import_module("client.models")
    line = models.LineInputRequest(
        sku="MUG-1", quantity=2, unit_price="9.99", currency=models.CurrencyEnum.EUR
    )
    body = models.OrderCollectionInputRequest(lines=[line])

    paid = call(package, "orders.orders_create", client, 201, body=body, idempotency_key="order-1")
    assert isinstance(paid, models.OrderOutput)
    assert paid.total == "19.98"
    cancelled = call(package, "orders.orders_create", client, 201, body=body)
    listed = call(package, "orders.orders_list", client, 200, limit=1)
    assert isinstance(listed, models.PaginatedOrderOutputList)
    assert (listed.count, [o.id for o in listed.results]) == (2, [cancelled.id])
    assert listed.next_ is not None
    assert listed.previous is None
    assert call(package, "orders.orders_pay_create", client, 200, order_id=paid.id).status.value == "paid"
    done = call(package, "orders.orders_cancel_create", client, 200, order_id=cancelled.id)
    assert done.status.value == "cancelled"
    conflict = call(package, "orders.orders_pay_create", client, 409, order_id=cancelled.id)
    assert isinstance(conflict, models.Problem)
    assert conflict.code == "order-state-conflict"
    refused = call(package, "orders.orders_create", client, 400, body=models.OrderCollectionInputRequest(
        lines=[models.LineInputRequest(sku="A", quantity=10_000, unit_price="99999999999.99",
                                       currency=models.CurrencyEnum.EUR)]))  # fmt: skip
    assert refused.code == "amount-out-of-range"
    assert "total" in refused.errors.additional_properties

    export = call(package, "orders.orders_export_create", client, 202)
    job = call(package, "jobs.jobs_retrieve", client, 200, job_id=export.job_id)
    assert isinstance(job, models.JobDetailOutput)
    assert str(job.id) == str(export.job_id)

    scan = package.types.File(payload=io.BytesIO(PDF), file_name="scan.pdf", mime_type="application/pdf")
    upload = models.SubmissionCollectionInputRequest(
        document_type=models.DocumentTypeEnum.PASSPORT, files=[scan]
    )
    submission = call(package, "kyc.kyc_submissions_create", client, 202, body=upload)
    assert isinstance(submission, models.SubmissionOutput)
    assert submission.documents[0].kind == "pdf"
    submissions = call(package, "kyc.kyc_submissions_list", client, 200)
    assert [s.id for s in submissions.results] == [submission.id]
    again = call(package, "kyc.kyc_submissions_retrieve", client, 200, submission_id=submission.id)
    assert again.status == submission.status
