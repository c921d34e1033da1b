"""Every error is an RFC 9457 problem body with application/problem+json."""

import pytest

from core.schema import URI_TOO_LONG

pytestmark = pytest.mark.django_db


def test_anonymous_call_is_401_problem(anon):
    # when an API is called without credentials
    response = anon.get("/api/me")
    # then the answer is a 401 problem that says how to authenticate
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 401
    assert body["code"] == "not-authenticated"
    assert body["type"] == "urn:taskyard:problem:not-authenticated"
    assert body["title"]
    assert body["detail"]
    assert response["WWW-Authenticate"].startswith("Token")


def test_bad_token_is_401(anon):
    anon.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = anon.get("/api/me")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication-failed"


def test_authenticated_call_succeeds(api, user):
    response = api.get("/api/me")
    assert response.status_code == 200
    assert response.json() == {"id": user.id, "username": "alice"}


def test_field_errors_are_400_problem_with_errors(anon):
    # given a body missing a required field and with a too-long one
    response = anon.post("/api/auth/token", {"username": "x" * 200}, format="json")
    # then each field is named in `errors`
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "validation-error"
    assert set(body["errors"]) == {"username", "password"}
    assert all(isinstance(m, str) for msgs in body["errors"].values() for m in msgs)


def test_malformed_json_is_400_parse_error(api):
    response = api.generic("POST", "/api/auth/token", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse-error"


def test_unknown_route_is_404_json(api):
    response = api.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "not-found"


def test_unknown_route_outside_api_is_404_json(anon, settings):
    settings.DEBUG = False
    response = anon.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["status"] == 404


def test_token_exchange(anon, user):
    response = anon.post(
        "/api/auth/token", {"username": "alice", "password": "pw-for-tests-only"}, format="json"
    )
    assert response.status_code == 200
    wrong = anon.post("/api/auth/token", {"username": "alice", "password": "nope"}, format="json")
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid-credentials"
    # the token works
    anon.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert anon.get("/api/me").status_code == 200


def test_schema_requires_auth_and_is_served(anon, api):
    assert anon.get("/api/schema/").status_code == 401
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/jobs/{job_id}" in response.json()["paths"]
    # the HTTP server's own refusal of an over-long URL is documented on every operation, without
    # claiming a problem+json body that gunicorn does not send
    operations = [op for path in response.json()["paths"].values() for op in path.values()]
    assert all(op["responses"]["414"] == {"description": URI_TOO_LONG} for op in operations)


def test_database_unavailable_is_503_problem_and_nothing_is_saved(transactional_db, user):
    from django.db import connection

    from orders.models import Order
    from tests.conftest import client_for
    from tests.harness import free_port

    client = client_for(user)
    database = connection.settings_dict
    port = database["PORT"]
    connection.close()
    database["PORT"] = str(free_port())  # nothing listens there: refused, as when PostgreSQL is down
    try:
        response = client.post(
            "/api/orders",
            {"lines": [{"sku": "MUG-RED", "quantity": 1, "unit_price": "9.99", "currency": "EUR"}]},
            format="json",
        )
    finally:
        database["PORT"] = port
        connection.close()
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"] == "5"
    assert response.json()["code"] == "database-unavailable"
    assert not Order.objects.exists()
