"""SMTP sink: a real SMTP server (aiosmtpd) that keeps every message it accepts.

Messages are written as .eml files to a directory, so tests and people read the
same thing. A small HTTP page lists them and switches failure modes:

    GET  /                    HTML list of messages (newest first)
    GET  /messages            JSON list: id, message_id, to, subject, received_at
    GET  /messages/<id>       the raw .eml
    GET  /control             current mode
    POST /control {"mode": "ok" | "fail-4xx" | "fail-5xx"}
         fail-4xx answers 451 (temporary: senders retry), fail-5xx answers 554 (permanent)

Run: python -m fakes.smtp_sink --smtp-port 1025 --http-port 1080 --dir var/smtp-sink
"""

import argparse
import email
import email.policy
import html
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from fakes.http import JsonServer, Request

MODES = {
    "ok": None,
    "fail-4xx": "451 4.3.0 Temporary failure (fake)",
    "fail-5xx": "554 5.7.1 Rejected (fake)",
}


class SinkHandler:
    def __init__(self, directory: Path, mode: str = "ok") -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self.lock = threading.Lock()
        self.refused = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd hook name
        failure = MODES[self.mode]
        if failure:
            with self.lock:
                self.refused += 1
            return failure
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        raw = envelope.original_content or b""
        meta = {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos)}
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(raw)
        (self.directory / f"{name}.json").write_text(json.dumps(meta))
        tmp.rename(self.directory / f"{name}.eml")  # atomic: readers never see half a message
        return "250 Message accepted for delivery"


def list_messages(directory: Path) -> list[dict[str, Any]]:
    items = []
    for path in sorted(directory.glob("*.eml"), reverse=True):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        items.append(
            {
                "id": path.stem,
                "message_id": str(msg.get("Message-ID", "")),
                "to": str(msg.get("To", "")),
                "subject": str(msg.get("Subject", "")),
                "received_at": path.stat().st_mtime,
            }
        )
    return items


def build_http(handler: SinkHandler, host: str, port: int) -> JsonServer:
    def index(_: Request) -> tuple[int, Any, dict[str, str]]:
        rows = "".join(
            f"<tr><td>{html.escape(m['subject'])}</td><td>{html.escape(m['to'])}</td>"
            f"<td><a href='/messages/{m['id']}'>{m['id']}</a></td></tr>"
            for m in list_messages(handler.directory)
        )
        page = (
            "<!doctype html><title>SMTP sink</title><h1>SMTP sink</h1>"
            f"<p>mode: <b>{handler.mode}</b></p>"
            f"<table border=1 cellpadding=4><tr><th>subject</th><th>to</th><th>raw</th></tr>{rows}</table>"
        )
        return 200, page, {}

    def messages(_: Request) -> tuple[int, Any, dict[str, str]]:
        return 200, list_messages(handler.directory), {}

    def raw(request: Request) -> tuple[int, Any, dict[str, str]]:
        name = request.path.rsplit("/", 1)[-1]
        path = handler.directory / f"{name}.eml"
        if "/" in name or not path.is_file():
            return 404, {"error": "no such message"}, {}
        return 200, path.read_bytes(), {"Content-Type": "message/rfc822"}

    def get_control(_: Request) -> tuple[int, Any, dict[str, str]]:
        return 200, {"mode": handler.mode, "refused": handler.refused}, {}

    def set_control(request: Request) -> tuple[int, Any, dict[str, str]]:
        mode = request.json().get("mode")
        if mode not in MODES:
            return 400, {"error": f"mode must be one of {sorted(MODES)}"}, {}
        handler.mode = mode
        return 200, {"mode": mode}, {}

    return JsonServer(
        host,
        port,
        {
            ("GET", "/"): index,
            ("GET", "/messages"): messages,
            ("GET", "/messages/*"): raw,
            ("GET", "/control"): get_control,
            ("POST", "/control"): set_control,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("SMTP_SINK_HOST", "127.0.0.1"))
    parser.add_argument("--smtp-port", type=int, default=int(os.environ.get("SMTP_SINK_PORT", "1025")))
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("SMTP_SINK_HTTP_PORT", "1080")))
    parser.add_argument("--dir", default=os.environ.get("SMTP_SINK_DIR", "var/smtp-sink"))
    parser.add_argument("--mode", default=os.environ.get("SMTP_SINK_MODE", "ok"), choices=sorted(MODES))
    args = parser.parse_args()

    handler = SinkHandler(Path(args.dir), args.mode)
    controller = Controller(handler, hostname=args.host, port=args.smtp_port)
    controller.start()
    http = build_http(handler, args.host, args.http_port)
    http.serve_in_thread()
    print(
        f"smtp sink: smtp://{args.host}:{args.smtp_port}  page http://{args.host}:{args.http_port}/  dir {args.dir}",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    http.shutdown()
    controller.stop()


if __name__ == "__main__":
    main()
