"""Request bodies are capped before anything reads them (core/body_limit.py)."""

import io
import json
from typing import Any

import pytest
import requests
import yaml
from rest_framework.test import APIClient

from tests.harness import ROOT, children_of, rss_bytes

pytestmark = pytest.mark.django_db

LIMIT = 32 * 1024
TOKEN_URL = "/api/auth/token"


class Unreadable(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def read(self, *args: Any) -> bytes:
        raise AssertionError("the body was read")


def empty_objects(size: int) -> bytes:
    """`[{},{},...]`, the cheapest JSON to send and among the dearest to parse, of about `size` bytes."""
    return ("[" + ",".join(["{}"] * max((size - 2) // 3, 1)) + "]").encode()


def test_a_json_body_over_the_limit_is_413_problem_json_without_being_read():
    environ: dict[str, Any] = {"CONTENT_LENGTH": str(LIMIT + 1), "wsgi.input": Unreadable()}
    response = APIClient().generic("POST", TOKEN_URL, content_type="application/json", **environ)
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert (body["code"], body["status"]) == ("body-too-large", 413)
    assert str(LIMIT) in body["detail"]


def test_a_body_just_under_the_limit_is_read_and_validated():
    body = empty_objects(LIMIT - 10)
    assert len(body) <= LIMIT
    response = APIClient().post(TOKEN_URL, body, content_type="application/json")
    assert response.status_code == 400  # read, parsed and refused as the wrong shape: not 413
    assert response.json()["code"] == "validation-error"


def test_the_largest_valid_order_fits_under_the_limit(api):
    # 100 lines (the most an order has) with the longest SKUs and prices the serializer takes
    line = {"sku": "S" * 64, "quantity": 1, "unit_price": "100000000.000", "currency": "BHD"}
    body = json.dumps({"lines": [line] * 100}).encode()
    assert len(body) < LIMIT / 2
    assert api.post("/api/orders/", body, content_type="application/json").status_code == 201


def test_a_bad_content_length_is_a_400_problem():
    environ: dict[str, Any] = {"CONTENT_LENGTH": "lots", "wsgi.input": Unreadable()}
    response = APIClient().generic("POST", TOKEN_URL, content_type="application/json", **environ)
    assert response.status_code == 400
    assert response.json()["code"] == "bad-content-length"


def test_only_the_upload_endpoint_takes_a_larger_body(api, settings):
    # a body the upload endpoint accepts as to its size (its own checks follow) is 413 elsewhere
    big = LIMIT * 4
    environ = {"CONTENT_LENGTH": str(big), "wsgi.input": Unreadable()}
    elsewhere = api.generic("POST", "/api/orders/", content_type="application/json", **environ)
    assert elsewhere.status_code == 413
    upload = api.generic("POST", "/api/kyc/submissions/", content_type="multipart/form-data; boundary=x", **{
        "CONTENT_LENGTH": str(big), "wsgi.input": io.BytesIO(b"--x--\r\n")})  # fmt: skip
    assert upload.status_code == 400  # read, and refused for what it holds (no files), not its size


def test_fifty_bodies_under_and_over_the_limit_leave_the_web_worker_small(isolated):
    # given a real gunicorn worker (the production path: its RSS is what the pod limit counts)
    # (rate limits raised: this test is about memory, and 100 anonymous posts would be throttled)
    web, url = isolated.web(
        "web-limits", workers=1, THROTTLE_AUTH_RATE="10000/min", THROTTLE_ANON_RATE="10000/min"
    )
    [worker] = children_of(web.pid)
    session = requests.Session()
    under, over, huge = (
        empty_objects(LIMIT - 10),
        empty_objects(LIMIT + 10),
        b"[" + b"{}," * 4_000_000 + b"{}]",
    )

    def post(body: bytes) -> requests.Response:
        return session.post(
            f"{url}{TOKEN_URL}", data=body, headers={"Content-Type": "application/json"}, timeout=30
        )

    for body in (under, over, huge):  # warm up: each path's first imports and allocations
        post(body)
    before = rss_bytes(worker)
    # when 50 bodies just under the limit and 50 just over it arrive, and a 12 MB one
    statuses = {post(under).status_code for _ in range(50)} | {post(over).status_code for _ in range(50)}
    refused = post(huge)
    grown = rss_bytes(worker) - before
    # then each was answered as the limit says, and the worker grew by less than 20 MB
    assert statuses == {400, 413}
    assert (refused.status_code, refused.headers["Content-Type"]) == (413, "application/problem+json")
    assert grown < 20 * 2**20, f"the worker grew by {grown / 2**20:.1f} MiB"


def test_the_ingress_allows_large_bodies_on_the_upload_path_only():
    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/overlays/example/ingress.yaml").read_text()))
    sizes = {
        path["path"]: doc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
        for doc in docs
        for rule in doc["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert sizes["/"] == "32k"
    assert sizes["/api/kyc/submissions/"] == "55m"  # 5 files of 10 MB and the form: KYC_MAX_FILES x size
