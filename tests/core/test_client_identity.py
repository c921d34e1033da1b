"""Who the client is: X-Forwarded-For only through trusted proxy hops, and failed logins
counted per address and per username, for the token endpoint and the admin together."""

import secrets

import pytest
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from core.client_ip import client_ip
from core.throttling import ScopedRateThrottle

pytestmark = pytest.mark.django_db

INGRESS = "10.9.0.1"  # what every request behind the ingress has as REMOTE_ADDR
TOKEN_URL = "/api/auth/token"


def address() -> str:
    return f"203.0.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, "1.2.3.4", INGRESS),  # no trusted proxy: the header is the client's own words
        (1, "1.2.3.4", "1.2.3.4"),  # the ingress appended the address it saw
        (1, "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # a spoofed prefix is left of what the ingress wrote
        (2, "6.6.6.6, 1.2.3.4, 10.9.0.7", "1.2.3.4"),
        (2, "1.2.3.4", "1.2.3.4"),  # fewer entries than hops: the leftmost
        (1, "not-an-address", INGRESS),  # garbage from our own proxy: fall back, don't key on it
        (1, "", INGRESS),
    ],
)
def test_client_ip_trusts_only_the_configured_hops(settings, hops, forwarded, expected):
    settings.TRUSTED_PROXY_HOPS = hops
    request = RequestFactory().get("/", REMOTE_ADDR=INGRESS, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


@pytest.fixture
def auth_rate_3_per_minute(monkeypatch):
    # DRF reads the rates into the class when it is imported
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "auth", "3/min")


@pytest.mark.usefixtures("auth_rate_3_per_minute")
def test_rotating_x_forwarded_for_does_not_escape_the_throttle():
    # given the auth scope's limit of 3 a minute and no trusted proxy
    client, remote = APIClient(), address()
    # when one client sends a new X-Forwarded-For with every request (invalid bodies: no login counted)
    statuses = [
        client.post(
            TOKEN_URL, {"username": "x"}, format="json", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=address()
        ).status_code
        for _ in range(4)
    ]
    # then the header changed nothing: the fourth is throttled
    assert statuses == [400, 400, 400, 429]


@pytest.mark.usefixtures("auth_rate_3_per_minute")
def test_behind_the_ingress_the_spoofed_prefix_is_ignored_and_the_client_is_throttled(settings):
    settings.TRUSTED_PROXY_HOPS = 1
    client, real = APIClient(), address()
    statuses = [
        client.post(
            TOKEN_URL,
            {"username": "x"},
            format="json",
            REMOTE_ADDR=INGRESS,
            HTTP_X_FORWARDED_FOR=f"{address()}, {real}",  # the client's made-up entry, then the ingress's
        ).status_code
        for _ in range(4)
    ]
    assert statuses == [400, 400, 400, 429]
    # and another client behind the same ingress is not affected
    other = client.post(
        TOKEN_URL, {"username": "x"}, format="json", REMOTE_ADDR=INGRESS, HTTP_X_FORWARDED_FOR=address()
    )
    assert other.status_code == 400


def token_login(remote: str, forwarded: str, username: str, password: str) -> int:
    response = APIClient().post(
        TOKEN_URL,
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=remote,
        HTTP_X_FORWARDED_FOR=forwarded,
    )
    if response.status_code == 429:
        assert response.json()["code"] in {"login-locked", "throttled"}
        assert int(response["Retry-After"]) > 0
    return response.status_code


def test_an_attacker_address_locks_itself_out_of_the_token_endpoint_not_the_staff(make_user, settings):
    settings.TRUSTED_PROXY_HOPS = 1
    make_user("ops", is_staff=True)
    attacker, staff = address(), address()
    # when one address guesses the staff member's password five times
    guesses = [token_login(INGRESS, attacker, "ops", f"guess-{n}") for n in range(5)]
    assert guesses == [400] * 5
    # then that address is locked out, even with the right password
    assert token_login(INGRESS, attacker, "ops", "pw-for-tests-only") == 429
    # and the staff member, from their own address behind the same ingress, still logs in
    assert token_login(INGRESS, staff, "ops", "pw-for-tests-only") == 200


def test_guessing_one_account_from_many_addresses_locks_that_account(make_user, settings):
    settings.TRUSTED_PROXY_HOPS = 1
    settings.LOGIN_MAX_FAILURES_PER_USERNAME = 6
    make_user("target")
    # when six addresses guess once each (no address reaches its own limit)
    assert [token_login(INGRESS, address(), "target", "guess") for _ in range(6)] == [400] * 6
    # then the username is locked, wherever the next try comes from
    assert token_login(INGRESS, address(), "target", "pw-for-tests-only") == 429
    # and other accounts are not
    make_user("bystander")
    assert token_login(INGRESS, address(), "bystander", "pw-for-tests-only") == 200


def test_a_successful_login_clears_the_counters(make_user, settings):
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 3
    make_user("forgetful")
    remote = address()
    assert [token_login(remote, "", "forgetful", "typo") for _ in range(2)] == [400, 400]
    assert token_login(remote, "", "forgetful", "pw-for-tests-only") == 200
    assert [token_login(remote, "", "forgetful", "typo") for _ in range(2)] == [400, 400]  # not locked


def test_admin_lockout_keys_on_the_client_behind_the_ingress(make_user, settings):
    # the bug: keyed on REMOTE_ADDR, five bad logins from anyone locked every staff member out
    settings.TRUSTED_PROXY_HOPS = 1
    make_user("admin1", is_staff=True)
    login = f"/{settings.ADMIN_URL}login/"
    attacker = Client(REMOTE_ADDR=INGRESS, HTTP_X_FORWARDED_FOR=address())
    staff = Client(REMOTE_ADDR=INGRESS, HTTP_X_FORWARDED_FOR=address())
    for n in range(5):
        assert attacker.post(login, {"username": "admin1", "password": f"guess-{n}"}).status_code == 200
    assert attacker.post(login, {"username": "admin1", "password": "pw-for-tests-only"}).status_code == 429
    assert staff.post(login, {"username": "admin1", "password": "pw-for-tests-only"}).status_code == 302


def test_failures_at_the_token_endpoint_count_at_the_admin_too(make_user, settings):
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 3
    make_user("both", is_staff=True)
    remote = address()
    assert [token_login(remote, "", "both", "guess") for _ in range(3)] == [400] * 3
    admin = Client(REMOTE_ADDR=remote)
    response = admin.post(
        f"/{settings.ADMIN_URL}login/", {"username": "both", "password": "pw-for-tests-only"}
    )
    assert response.status_code == 429
