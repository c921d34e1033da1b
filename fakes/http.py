"""A small JSON-over-HTTP toolkit for the fakes (stdlib only, threaded)."""

import json
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Route = Callable[["Request"], tuple[int, Any, dict[str, str]]]


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
