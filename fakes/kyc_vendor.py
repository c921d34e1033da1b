"""KYC vendor fake: a real HTTP server (stdlib only) that checks identity documents.

    POST /checks          multipart: document_type, files; header Idempotency-Key (required).
                          201 {"id", "status", "reason_codes", ...}; the same key again returns
                          the same check (200, Idempotent-Replayed: true), never a second one;
                          the same key with other documents is 422 idempotency_key_reused.
    GET  /checks/<id>     the check: "pending" until its decision is due, then
                          "approved" | "rejected" | "manual_review" with reason codes.
    GET  /control         the current settings
    POST /control {...}   change any of them (tests and demos switch modes here):
         mode            "ok" | "down" (every call 503) | "429" (every call 429 + Retry-After)
                         | "reject" (every submit `reject_status`: 400 or 422) | "slow" (`slow_latency`)
         latency         seconds added to every call
         error_rate      0..1: that share of calls fails at random with one of `error_statuses`
         error_statuses  e.g. [500, 503, 429]
         retry_after     seconds sent in Retry-After ...
         retry_after_statuses  ... with these statuses (default [429]; add 503 to send it there too)
         fail_submits    the next N submits fail with `fail_with`: a status code, or "timeout":
                         the check IS created, but the answer comes `timeout_seconds` late
                         (the client gave up; its retry must get the same check back)
         decision        default decision: "approve" | "reject" | "manual_review"
         decision_delay  seconds until a new check's decision is due (0: decided at submit)
         reason_codes    override the reason codes of new decisions
    GET  /stats[?window=S] calls counted: submits, reads, distinct checks, status codes, every
                          call's arrival time, calls per minute, and with `window` the most
                          calls seen in any S-second window (the rate-limit check)
    POST /reset           forget checks and counters; settings back to the command line's

A marker in a document decides that check regardless of the default, so concurrent
tests need no shared setting: the bytes KYC-FAKE:reject, KYC-FAKE:manual_review or
KYC-FAKE:approve anywhere in a file.

Run: python -m fakes.kyc_vendor --port 8025 [--mode ok] [--decision-delay 2] [--latency 0.2] ...
"""

import bisect
import hashlib
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fakes.http import ControlledFake, FaultSettings, JsonServer, Reply, Request, fake_arguments

MODES = ("ok", "down", "429", "reject", "slow")
DECISIONS = {"approve": "approved", "reject": "rejected", "manual_review": "manual_review"}
REASON_CODES = {
    "approved": ["clear"],
    "rejected": ["document_expired"],
    "manual_review": ["image_quality_low", "additional_document_required"],
}
MARKER = re.compile(rb"KYC-FAKE:(approve|reject|manual_review)")


@dataclass
class Settings(FaultSettings):
    MODES = MODES

    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 503, 429])
    retry_after_statuses: list[int] = field(default_factory=lambda: [429])
    reject_status: int = 400
    fail_submits: int = 0
    decision: str = "approve"
    decision_delay: float = 2.0
    reason_codes: list[str] | None = None

    def check(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}")


@dataclass
class Check:
    id: str
    key: str
    fingerprint: str
    document_type: str
    documents: int
    decision: str
    reason_codes: list[str]
    created_at: float
    due_at: float

    def view(self, now: float) -> dict[str, Any]:
        decided = now >= self.due_at
        return {
            "id": self.id,
            "status": self.decision if decided else "pending",
            "reason_codes": self.reason_codes if decided else [],
            "document_type": self.document_type,
            "documents": self.documents,
            "created_at": datetime.fromtimestamp(self.created_at, UTC).isoformat(),
        }


@dataclass
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for section in body.split(delimiter)[1:]:
        if section.startswith(b"--"):
            break
        head, _, data = section.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            header, _, value = line.partition(":")
            headers[header.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        parts.append(
            Part(
                name=name.group(1) if name else "",
                filename=filename.group(1) if filename else None,
                content_type=headers.get("content-type", ""),
                data=data.removesuffix(b"\r\n"),
            )
        )
    return parts


class Vendor(ControlledFake):
    settings: Settings

    def forget(self) -> None:
        self.checks: dict[str, Check] = {}
        self.by_key: dict[str, str] = {}
        self.submits = 0
        self.reads = 0
        self.call_times: list[float] = []
        self.submits_by_key: dict[str, int] = {}

    # --- counting -------------------------------------------------------------------
    def _count(self, kind: str, key: str = "") -> None:
        with self.lock:
            self.call_times.append(time.time())
            if kind == "submit":
                self.submits += 1
                if key:
                    self.submits_by_key[key] = self.submits_by_key.get(key, 0) + 1
            else:
                self.reads += 1

    def _error(self, status: int) -> Reply:
        s = self.settings
        headers = {"Retry-After": f"{s.retry_after:g}"} if status in s.retry_after_statuses else {}
        return self.answer(status, {"error": "rate_limited" if status == 429 else "unavailable"}, headers)

    def _failure(self, kind: str) -> Reply | None:
        """The answer of a failure mode, if one applies to this call (after the latency)."""
        s = self.settings
        self.pause()
        if kind == "submit" and self.scripted_failure("fail_submits", timeout=False):
            return self._error(int(s.fail_with))
        if s.mode == "down":
            return self._error(503)
        if s.mode == "429":
            return self._error(429)
        if s.mode == "reject" and kind == "submit":
            return self.answer(s.reject_status, {"error": "invalid_document"})
        if s.error_rate and random.random() < s.error_rate:
            return self._error(random.choice(s.error_statuses))
        return None

    # --- routes ---------------------------------------------------------------------
    def submit(self, request: Request) -> Reply:
        key = request.headers.get("Idempotency-Key", "")
        self._count("submit", key)
        failure = self._failure("submit")
        if failure:
            return failure
        if not key:
            return self.answer(400, {"error": "idempotency_key_required"})
        try:
            parts = parse_multipart(request.body, request.headers.get("Content-Type", ""))
        except ValueError:
            return self.answer(400, {"error": "multipart_required"})
        files = [p for p in parts if p.name == "files" and p.filename is not None]
        document_type = next((p.data.decode() for p in parts if p.name == "document_type"), "")
        if not files or not document_type:
            return self.answer(422, {"error": "documents_required"})
        fingerprint = hashlib.sha256(
            document_type.encode() + b"".join(hashlib.sha256(f.data).digest() for f in files)
        ).hexdigest()
        now = time.time()
        with self.lock:
            existing = self.checks.get(self.by_key.get(key, ""))
            if existing is None:
                marker = next((m.group(1).decode() for f in files if (m := MARKER.search(f.data))), None)
                decision = DECISIONS[marker or self.settings.decision]
                check = Check(
                    id=f"chk_{uuid.uuid4().hex[:16]}",
                    key=key,
                    fingerprint=fingerprint,
                    document_type=document_type,
                    documents=len(files),
                    decision=decision,
                    reason_codes=list(self.settings.reason_codes or REASON_CODES[decision]),
                    created_at=now,
                    due_at=now + self.settings.decision_delay,
                )
                self.checks[check.id] = check
                self.by_key[key] = check.id
        if existing is not None:
            if existing.fingerprint != fingerprint:
                return self.answer(422, {"error": "idempotency_key_reused"})
            reply = self.answer(200, existing.view(now), {"Idempotent-Replayed": "true"})
        else:
            reply = self.answer(201, check.view(now), {"Location": f"/checks/{check.id}"})
        if self.scripted_failure("fail_submits", timeout=True):
            time.sleep(self.settings.timeout_seconds)  # done, but the answer comes too late
        return reply

    def read(self, request: Request) -> Reply:
        self._count("read")
        failure = self._failure("read")
        if failure:
            return failure
        check = self.checks.get(request.path.rsplit("/", 1)[-1])
        if check is None:
            return self.answer(404, {"error": "check_not_found"})
        return self.answer(200, check.view(time.time()), {})

    def stats(self, request: Request) -> Reply:
        with self.lock:
            times = sorted(self.call_times)
            body: dict[str, Any] = {
                "submits": self.submits,
                "reads": self.reads,
                "calls": len(times),
                "checks": len(self.checks),
                "responses": dict(self.responses),
                "submits_by_key": dict(self.submits_by_key),
                "call_times": times,
                "per_minute": per_minute(times),
            }
        if "window" in request.query:
            body["window"] = float(request.query["window"])
            body["max_in_window"] = max_in_window(times, body["window"])
        return 200, body, {}


def per_minute(times: list[float]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in times:
        minute = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%MZ")
        counts[minute] = counts.get(minute, 0) + 1
    return counts


def max_in_window(times: list[float], window: float) -> int:
    """The most calls in any half-open interval [t, t + window) of the sorted arrival times."""
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def build_server(vendor: Vendor, host: str, port: int) -> JsonServer:
    return JsonServer(
        host,
        port,
        {
            ("POST", "/checks"): vendor.submit,
            ("GET", "/checks/*"): vendor.read,
            ("GET", "/stats"): vendor.stats,
            **vendor.control_routes(),
        },
    )


def main() -> None:
    parser = fake_arguments(__doc__, "KYC_VENDOR", 8025, MODES)
    parser.add_argument("--slow-latency", type=float, default=5.0, help="extra seconds in mode 'slow'")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of calls failing at random")
    parser.add_argument("--error-statuses", default="500,503,429", help="statuses of the random failures")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of 429 answers")
    parser.add_argument("--retry-after-statuses", default="429", help="statuses that carry Retry-After")
    parser.add_argument("--reject-status", type=int, default=400, choices=[400, 422])
    parser.add_argument("--decision", default="approve", choices=sorted(DECISIONS))
    parser.add_argument("--decision-delay", type=float, default=2.0, help="seconds until a decision")
    args = parser.parse_args()

    defaults = Settings(
        mode=args.mode,
        latency=args.latency,
        slow_latency=args.slow_latency,
        error_rate=args.error_rate,
        error_statuses=[int(s) for s in args.error_statuses.split(",") if s],
        retry_after=args.retry_after,
        retry_after_statuses=[int(s) for s in args.retry_after_statuses.split(",") if s],
        reject_status=args.reject_status,
        decision=args.decision,
        decision_delay=args.decision_delay,
    )
    server = build_server(Vendor(defaults), args.host, args.port)
    server.serve_until_signalled(f"kyc vendor: http://{args.host}:{server.port}  mode {args.mode}")


if __name__ == "__main__":
    main()
