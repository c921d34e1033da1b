"""A small JSON-over-HTTP toolkit for the fakes (stdlib only, threaded): the server, and the
settings a test switches at /control with the answers counted by status (ControlledFake)."""

import argparse
import copy
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, Any, dict[str, str]]
Route = Callable[["Request"], Reply]


class Request:
    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        self.method = handler.command
        self.path = parts.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.headers = handler.headers
        length = int(handler.headers.get("Content-Length") or 0)
        self.body = handler.rfile.read(length) if length else b""

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


class JsonServer:
    """Routes (method, path) to functions returning (status, body, headers).

    A body of bytes or str is sent as is (HTML, files); anything else as JSON.
    """

    def __init__(self, host: str, port: int, routes: dict[tuple[str, str], Route]) -> None:
        self.routes = routes
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _dispatch(self) -> None:
                request = Request(self)
                route = server.routes.get((request.method, request.path))
                if route is None:
                    prefix = next(
                        (
                            r
                            for (m, p), r in server.routes.items()
                            if m == request.method and p.endswith("/*") and request.path.startswith(p[:-1])
                        ),
                        None,
                    )
                    route = prefix
                if route is None:
                    headers: dict[str, str] = {}
                    status, body = 404, {"error": "not found"}
                else:
                    status, body, headers = route(request)
                if isinstance(body, bytes | str):
                    payload = body.encode() if isinstance(body, str) else body
                    headers.setdefault("Content-Type", "text/html; charset=utf-8")
                else:
                    payload = json.dumps(body).encode()
                    headers.setdefault("Content-Type", "application/json")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _dispatch  # noqa: N815 - http.server names

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return  # quiet: the fakes' own counters are the record

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        return thread

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def serve_until_signalled(self, banner: str, on_stop: Callable[[], None] | None = None) -> None:
        """Serve in a thread, print `banner` (the tests wait for it), stop on SIGTERM or SIGINT."""
        self.serve_in_thread()
        print(banner, flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        stop.wait()
        if on_stop is not None:
            on_stop()
        self.shutdown()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class ControlSettings:
    """Base of a fake's settings dataclass: `POST /control` changes them by name."""

    MODES: ClassVar[tuple[str, ...]] = ()
    mode: str

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}  # type: ignore[arg-type]  # subclasses are dataclasses
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            setattr(self, name, value)
        if self.mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}")
        self.check()

    def check(self) -> None:
        """Rules of a fake's own settings, beyond the mode (raise ValueError)."""


@dataclass
class FaultSettings(ControlSettings):
    """The knobs every vendor fake shares: latency (plus `slow_latency` in "slow" mode), the
    Retry-After it sends, and scripted failures: the next `fail_*` calls (a counter each fake
    names) answer `fail_with`, a status, or "timeout": done, but answered after `timeout_seconds`."""

    mode: str = "ok"
    latency: float = 0.0
    slow_latency: float = 5.0
    retry_after: float = 1.0
    fail_with: int | str = 503
    timeout_seconds: float = 30.0


class ControlledFake:
    """A fake with settings tests switch (GET/POST /control), answers counted by status and
    POST /reset (settings back to the command line's, everything recorded forgotten)."""

    def __init__(self, defaults: Any) -> None:
        self.defaults = defaults
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.settings = copy.deepcopy(self.defaults)
            self.responses: dict[str, int] = {}
            self.forget()

    def forget(self) -> None:
        """Drop what the fake recorded (called with the lock held)."""

    def pause(self) -> None:
        """Wait the latency FaultSettings ask for before answering."""
        s = self.settings
        if delay := s.latency + (s.slow_latency if s.mode == "slow" else 0.0):
            time.sleep(delay)

    def scripted_failure(self, counter: str, *, timeout: bool) -> bool:
        """Use up one of the scripted failures counted by the setting `counter`, if `fail_with`
        is of the kind asked (a late answer or an error status); True when one was used."""
        with self.lock:
            left = getattr(self.settings, counter)
            hit = left > 0 and (self.settings.fail_with == "timeout") == timeout
            if hit:
                setattr(self.settings, counter, left - 1)
        return bool(hit)

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
        with self.lock:
            self.responses[str(status)] = self.responses.get(str(status), 0) + 1
        return status, body, headers or {}

    def set_control(self, request: Request) -> Reply:
        try:
            changes = request.json()
            with self.lock:
                self.settings.update(changes)
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}, {}
        return 200, asdict(self.settings), {}

    def do_reset(self, _: Request) -> Reply:
        self.reset()
        return 200, {"reset": True}, {}

    def control_routes(self) -> dict[tuple[str, str], Route]:
        return {
            ("GET", "/control"): lambda _: (200, asdict(self.settings), {}),
            ("POST", "/control"): self.set_control,
            ("POST", "/reset"): self.do_reset,
        }


def fake_arguments(
    doc: str | None, env_prefix: str, port: int, modes: tuple[str, ...]
) -> argparse.ArgumentParser:
    """The command line every fake shares: --host, --port (or <PREFIX>_HOST/_PORT), --mode, --latency."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--host", default=os.environ.get(f"{env_prefix}_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get(f"{env_prefix}_PORT", str(port))))
    parser.add_argument("--mode", default="ok", choices=modes)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every call")
    return parser
