"""The outbound HTTP helper (core/http.py) that every vendor client uses, against a real
local HTTP server: what is retryable, what is permanent, and how Retry-After is read."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.http import HttpClient, UpstreamPermanent, UpstreamRetryable, retry_after_seconds
from tests.harness import free_port

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """Answers GET /<status>?retry_after=<value> with that status (and header), a JSON error code."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            status = int(path.strip("/"))
            body = b'{"error": "document_unreadable", "detail": "echoes alice@example.test"}'
            self.send_response(status)
            if query.startswith("retry_after="):
                self.send_header("Retry-After", query.split("=", 1)[1].replace("%20", " "))
            if 300 <= status < 400:
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()


def client(base_url: str) -> HttpClient:
    return HttpClient(service="vendor", base_url=base_url, connect_timeout=2, read_timeout=2)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_5xx_and_the_retry_statuses_are_retryable(server, status):
    with pytest.raises(UpstreamRetryable) as failed:
        client(server).request("GET", f"/{status}", what="poll")
    assert failed.value.status_code == status
    # the service's error code is kept, its free text (which may echo what we sent) is not
    assert str(failed.value) == f"vendor poll: HTTP {status} (document_unreadable)"


@pytest.mark.parametrize("status", [301, 400, 401, 404, 409, 422])
def test_other_statuses_are_permanent_and_redirects_are_not_followed(server, status):
    with pytest.raises(UpstreamPermanent) as failed:
        client(server).request("GET", f"/{status}", what="poll")
    assert failed.value.status_code == status


def test_a_2xx_is_returned(server):
    assert client(server).request("GET", "/200", what="poll").status_code == 200


def test_retry_after_travels_with_the_error(server):
    with pytest.raises(UpstreamRetryable) as failed:
        client(server).request("GET", "/503?retry_after=7", what="poll")
    assert failed.value.retry_after == 7.0


def test_nothing_listening_is_retryable():
    with pytest.raises(UpstreamRetryable, match="connection failed"):
        client(f"http://127.0.0.1:{free_port()}").request("GET", "/", what="poll")


def test_a_bad_url_is_permanent():
    with pytest.raises(UpstreamPermanent):
        client("nope://").request("GET", "/", what="poll")


def test_retry_after_reads_seconds_and_every_http_date_form():
    assert retry_after_seconds("0", now=NOW) == 0.0
    assert retry_after_seconds(" 120 ", now=NOW) == 120.0
    assert retry_after_seconds("1.5", now=NOW) == 1.5  # not RFC 9110, but sent by some services
    in_a_minute = NOW + timedelta(seconds=60)
    assert retry_after_seconds(format_datetime(in_a_minute, usegmt=True), now=NOW) == 60.0
    # "-0000" (and the obsolete zone-less forms) parse as naive datetimes: read as UTC, not a TypeError
    assert retry_after_seconds("Tue, 01 Dec 2026 12:01:00 -0000", now=NOW) == 60.0
    assert retry_after_seconds("Tue Dec  1 12:01:00 2026", now=NOW) == 60.0  # asctime
    assert retry_after_seconds("Tuesday, 01-Dec-26 12:01:00 GMT", now=NOW) == 60.0  # RFC 850
    assert retry_after_seconds(format_datetime(NOW - timedelta(seconds=5), usegmt=True), now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.2.3", "Tue, 99 Foo 2026"])
def test_unreadable_retry_after_is_none(value):
    assert retry_after_seconds(value, now=NOW) is None
