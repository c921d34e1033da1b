"""Private files in S3-compatible object storage, against a real S3 server process (moto's
server mode on loopback): uploads are private, downloads are short-lived pre-signed URLs,
and the invoice and job-result endpoints redirect to them.

What moto does not do: moto 5 checks neither the signature nor the expiry of a pre-signed
URL (it only looks for `Signature=` in it; moto/s3/responses.py). So "expires" is asserted
on the URL we sign (X-Amz-Expires is our TTL, X-Amz-Date is now, both inside the signed
query); that the store then refuses it is S3's part of SigV4, not something a local fake
can show.
"""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.http import FileResponse, HttpResponseRedirect
from django.test import override_settings

from core.storage import PrivateFileSystemStorage, PrivateS3Storage, private_download
from orders import exports, invoices, services
from tests.harness import ROOT, Proc, free_port, wait_until

TTL_SECONDS = 30


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m moto.server` on a free loopback port: a real HTTP S3 API."""
    port = free_port()
    logs = tmp_path_factory.mktemp("moto")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = Proc("moto", argv, env, logs / "moto.log").start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(endpoint) or not proc.alive(), timeout=30, message="moto to answer")
        assert proc.alive(), proc.log()
        yield endpoint
    finally:
        proc.stop()


def _answers(endpoint: str) -> bool:
    try:
        return requests.get(endpoint, timeout=2).status_code < 500
    except requests.ConnectionError:
        return False


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, Any]:
    """Storage OPTIONS for a fresh bucket, as production.py builds them (path-style: loopback)."""
    options = {
        "bucket_name": f"taskyard-{uuid.uuid4().hex[:12]}",
        "endpoint_url": s3_endpoint,
        "region_name": "us-east-1",
        "addressing_style": "path",
        "access_key": "testing",
        "secret_key": "testing",
        "querystring_expire": TTL_SECONDS,
    }
    PrivateS3Storage(**options).connection.meta.client.create_bucket(Bucket=options["bucket_name"])
    return options


@pytest.fixture
def s3_storage(s3_options: dict[str, Any]) -> PrivateS3Storage:
    return PrivateS3Storage(**s3_options)


@pytest.fixture
def s3_default_storage(s3_options: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`default_storage` is the S3 storage for the duration (what production settings do)."""
    storages = {
        **settings.STORAGES,
        "default": {"BACKEND": "core.storage.PrivateS3Storage", "OPTIONS": s3_options},
    }
    with override_settings(STORAGES=storages):
        yield s3_options


def test_uploads_are_private_objects(s3_storage, s3_endpoint):
    # Given a file saved through the storage
    name = s3_storage.save("kyc/2026/01/01/abc.pdf", ContentFile(b"%PDF-1.4 passport scan"))
    # Then the object is there, readable with credentials...
    assert s3_storage.exists(name)
    assert s3_storage.open(name).read() == b"%PDF-1.4 passport scan"
    # ...its ACL grants nobody but the owner...
    client = s3_storage.connection.meta.client
    grants = client.get_object_acl(Bucket=s3_storage.bucket_name, Key=name)["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    assert all(g["Grantee"]["Type"] == "CanonicalUser" for g in grants)
    # ...and an anonymous GET of its plain URL is refused.
    plain = f"{s3_endpoint}/{s3_storage.bucket_name}/{name}"
    assert requests.get(plain, timeout=5).status_code == 403


def test_a_taken_name_is_never_overwritten(s3_storage):
    first = s3_storage.save("invoices/order-1.pdf", ContentFile(b"one"))
    second = s3_storage.save("invoices/order-1.pdf", ContentFile(b"two"))
    assert first != second
    assert s3_storage.open(first).read() == b"one"


def test_text_files_are_stored_as_utf8(s3_storage, tmp_path):
    # The CSV export hands over a text-mode temporary file (django-storages encodes it).
    path = tmp_path / "export.csv"
    path.write_text("number,total\nTY-00000001,19.98 €\n", encoding="utf-8")
    with path.open("r", encoding="utf-8", newline="") as handle:
        from django.core.files import File

        name = s3_storage.save("exports/orders.csv", File(handle))
    assert s3_storage.open(name).read().decode("utf-8") == "number,total\nTY-00000001,19.98 €\n"


def test_a_signed_download_url_works_and_is_short_lived(s3_storage):
    name = s3_storage.save("invoices/order-7.pdf", ContentFile(b"%PDF-1.4 invoice"))
    before = datetime.now(UTC).replace(microsecond=0)
    url = s3_storage.signed_download_url(name, filename="invoice-TY-7.pdf", content_type="application/pdf")
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.content == b"%PDF-1.4 invoice"
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"] == 'attachment; filename="invoice-TY-7.pdf"'
    # SigV4 query auth: the expiry is part of what is signed (see the module docstring).
    query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert int(query["X-Amz-Expires"]) == TTL_SECONDS
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert 0 <= (signed_at - before).total_seconds() < 5
    assert "x-amz-date" not in query["X-Amz-SignedHeaders"]  # date and expiry are in the query
    assert query["X-Amz-Signature"]


def test_the_private_storage_refuses_unsigned_urls(s3_options):
    with pytest.raises(ImproperlyConfigured):
        PrivateS3Storage(**s3_options, custom_domain="cdn.taskyard.example")
    with pytest.raises(ImproperlyConfigured):
        PrivateS3Storage(**{**s3_options, "querystring_auth": False})


@pytest.mark.django_db
def test_invoice_download_redirects_to_a_working_presigned_url(api, user, s3_default_storage):
    # Given an order whose invoice PDF was rendered into the bucket
    order = services.order_create(
        user=user,
        lines=[services.LineInput(sku="SKU-1", quantity=2, unit_price=Decimal("9.99"), currency="EUR")],
    )
    invoice = invoices.invoice_render(order_id=order.pk)
    # When the owner downloads it
    response = api.get(f"/api/orders/{order.pk}/invoice")
    # Then the API answers with a redirect to a pre-signed URL nobody may cache...
    assert response.status_code == 302
    assert response["Cache-Control"] == "private, no-store"
    location = response["Location"]
    assert f"/{s3_default_storage['bucket_name']}/{invoice.file}?" in location
    # ...which serves the PDF as the streaming view would have.
    download = requests.get(location, timeout=5)
    assert download.status_code == 200
    assert download.content.startswith(b"%PDF")
    assert download.headers["Content-Type"] == "application/pdf"
    assert download.headers["Content-Disposition"] == f'attachment; filename="invoice-{order.number}.pdf"'


@pytest.mark.django_db
def test_export_result_redirects_to_a_working_presigned_url(api, user, s3_default_storage):
    services.order_create(
        user=user,
        lines=[services.LineInput(sku="SKU-2", quantity=1, unit_price=Decimal("5.00"), currency="EUR")],
    )
    job = exports.order_export_start(user=user)
    stored = exports.order_export_run(job_id=str(job.id))
    response = api.get(f"/api/jobs/{job.id}/result")
    assert response.status_code == 302
    download = requests.get(response["Location"], timeout=5)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "text/csv"
    assert download.headers["Content-Disposition"] == f'attachment; filename="{stored.rsplit("/", 1)[-1]}"'
    lines = download.content.decode("utf-8").splitlines()
    assert lines[0].startswith("number,created_at,status")
    assert len(lines) == 2


def test_the_filesystem_storage_still_streams(tmp_path):
    storage = PrivateFileSystemStorage(location=str(tmp_path))
    name = storage.save("invoices/order-9.pdf", ContentFile(b"%PDF-1.4 local"))
    response = private_download(
        name, filename="invoice-TY-9.pdf", content_type="application/pdf", storage=storage
    )
    assert isinstance(response, FileResponse)
    assert not isinstance(response, HttpResponseRedirect)
    assert b"".join(response.streaming_content) == b"%PDF-1.4 local"  # type: ignore[arg-type]
    assert response["Content-Disposition"] == 'attachment; filename="invoice-TY-9.pdf"'


def production_storage(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Import the production settings in a fresh interpreter and describe the default storage."""
    code = (
        "import django, json; django.setup();"
        "from django.core.files.storage import storages; s = storages['default'];"
        "print(json.dumps({'class': type(s).__name__, 'acl': getattr(s, 'default_acl', None),"
        " 'ttl': getattr(s, 'querystring_expire', None), 'bucket': getattr(s, 'bucket_name', None)}))"
    )
    base = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "p" * 60,
        "ALLOWED_HOSTS": "api.taskyard.example",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_settings_put_private_files_in_the_bucket(tmp_path):
    result = production_storage(tmp_path, PRIVATE_STORAGE_BUCKET="taskyard-prod-private")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "class": "PrivateS3Storage",
        "acl": "private",
        "ttl": 120,
        "bucket": "taskyard-prod-private",
    }
    # A bucket with ACLs disabled takes no ACL header at all.
    no_acl = production_storage(tmp_path, PRIVATE_STORAGE_BUCKET="b", PRIVATE_STORAGE_ACL="")
    assert json.loads(no_acl.stdout)["acl"] is None


def test_production_settings_refuse_to_start_without_a_bucket(tmp_path):
    result = production_storage(tmp_path)
    assert result.returncode != 0
    assert "PRIVATE_STORAGE_BUCKET" in result.stderr
    single_host = production_storage(tmp_path, PRIVATE_STORAGE="filesystem")
    assert single_host.returncode == 0, single_host.stderr
    assert json.loads(single_host.stdout)["class"] == "PrivateFileSystemStorage"
