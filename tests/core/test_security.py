"""Security defaults: deploy checks, secrets, throttling, admin lockout, CORS, private files,
and every API route refusing anonymous callers and other users' objects."""

import re
import secrets
import subprocess
import sys
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from core import problems
from jobs.flows.definition import Step
from jobs.flows.services import flow_start
from jobs.services import job_create
from tests.conftest import client_for
from tests.harness import ROOT, child_env

pytestmark = pytest.mark.django_db


def production_env(**extra: str) -> dict[str, str]:
    env = child_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="api.example.com",
        FLOWER_BASIC_AUTH="ops:" + secrets.token_urlsafe(16),
        PRIVATE_STORAGE_BUCKET="taskyard-private",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_check_deploy_passes_with_production_settings():
    result = manage(production_env(), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("secret", [None, "insecure-local-only-key-change-me", "short"])
def test_production_refuses_a_missing_or_weak_secret_key(secret):
    env = production_env()
    if secret is None:
        env.pop("SECRET_KEY")
    else:
        env["SECRET_KEY"] = secret
    result = manage(env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_throttled_requests_get_a_429_problem_with_retry_after(anon, user):
    outside = {"REMOTE_ADDR": f"10.0.{secrets.randbelow(250)}.{secrets.randbelow(250)}"}
    body = {"username": "alice"}  # invalid, so no failed login counts: only the throttle acts
    statuses = [anon.post("/api/auth/token", body, format="json", **outside).status_code for _ in range(10)]
    assert statuses == [400] * 10  # the auth scope allows 10 per minute
    response = anon.post("/api/auth/token", body, format="json", **outside)
    assert response.status_code == 429
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) > 0


def test_admin_login_is_locked_after_repeated_failures(make_user, settings):
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 3
    make_user("staffer", is_staff=True)
    client = Client(REMOTE_ADDR=f"10.1.{secrets.randbelow(250)}.{secrets.randbelow(250)}")
    login = f"/{settings.ADMIN_URL}login/"
    for _ in range(3):
        assert client.post(login, {"username": "staffer", "password": "wrong"}).status_code == 200
    # even the right password is refused while locked
    locked = client.post(login, {"username": "staffer", "password": "pw-for-tests-only"})
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0


def test_admin_login_works_and_resets_the_counter(make_user, settings):
    make_user("staffer2", is_staff=True)
    client = Client(REMOTE_ADDR="10.2.0.1")
    login = f"/{settings.ADMIN_URL}login/"
    client.post(login, {"username": "staffer2", "password": "wrong"})
    assert client.post(login, {"username": "staffer2", "password": "pw-for-tests-only"}).status_code == 302


def test_cors_is_off(api):
    response = api.get("/api/me", HTTP_ORIGIN="https://evil.example")
    assert "Access-Control-Allow-Origin" not in response
    preflight = api.options(
        "/api/orders", HTTP_ORIGIN="https://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert "Access-Control-Allow-Origin" not in preflight


def test_uploaded_and_generated_files_have_no_public_url(anon, api):
    name = default_storage.save("invoices/secret.pdf", ContentFile(b"%PDF-1.4 private"))
    with pytest.raises(ValueError, match="not accessible via a URL"):
        default_storage.url(name)
    for client in (anon, api):
        for path in (f"/media/{name}", f"/{name}", f"/static/../{name}"):
            assert client.get(path).status_code == 404


# --- every API route: anonymous -> 401, another user's object -> 404 -------------------
OPEN_ROUTES = {"api/auth/token"}  # the credentials in the body are the authentication


def api_routes() -> list[str]:
    found: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif (
                isinstance(pattern, URLPattern)
                and route.startswith("api/")
                and "probe" not in route
                and pattern.callback is not problems.not_found  # the catch-all 404 of unknown URLs
            ):
                found.append(route.replace("^", "").replace("$", ""))

    walk(get_resolver().url_patterns, "")
    return sorted(set(found) - OPEN_ROUTES)


def fill(route: str, objects: dict[str, object]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in objects, f"no test object for <{name}> in {route}: add one to owned_objects()"
        return str(objects[name])

    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", value, route).replace("/?", "")


def owned_objects(owner) -> dict[str, object]:
    """One object of each kind the API addresses by id, owned by `owner`."""
    from orders.models import Order

    order = Order.objects.create(owner=owner, currency="EUR", total=1)
    objects: dict[str, object] = {"order_id": order.pk, "job_id": job_create(owner=owner, kind="probe").pk}
    with transaction.atomic():
        step = Step("a", "probe.record", kwargs={"key": "a"})
        objects["flow_id"] = flow_start(kind="probe", owner=owner, steps=[step]).pk
    try:
        from kyc.models import Submission

        objects["submission_id"] = Submission.objects.create(owner=owner).pk
    except (ImportError, TypeError, ValueError):
        objects["submission_id"] = uuid.uuid4()  # the KYC flow gives this a real object
    return objects


def test_every_api_route_refuses_anonymous_callers(anon, user):
    objects = owned_objects(user)
    routes = api_routes()
    assert len(routes) >= 10
    for route in routes:
        path = fill(route, objects)
        for method in ("get", "post"):
            response = getattr(anon, method)(path)
            assert response.status_code == 401, (method, path, response.status_code)
            assert response["Content-Type"] == "application/problem+json"


def test_other_users_objects_are_404_on_every_route(user, other_user):
    objects = owned_objects(user)
    intruder = client_for(other_user)
    object_routes = [r for r in api_routes() if "<" in r]
    assert object_routes
    for route in object_routes:
        path = fill(route, objects)
        for method in ("get", "post"):
            response = getattr(intruder, method)(path)
            assert response.status_code in (404, 405), (method, path, response.status_code)
            if response.status_code == 404:
                assert response.json()["code"] == "not-found"
