"""`make demo`: walk through every pattern as an API client would, one line per step.

Run it against a running stack (`make run` in another terminal). It reads the demo user's
credentials from var/demo-credentials.json (written by `make run`) or DEMO_TOKEN /
DEMO_USERNAME / DEMO_PASSWORD, and the addresses from WEB_URL, SMTP_SINK_URL,
KYC_VENDOR_URL, PAYMENT_PROVIDER_URL, FLOWER_URL (defaults: the ports `make run` uses). Every step checks what
it claims; the exit code is 1 if any step did not behave as stated, so the demo doubles
as a smoke test (tests/test_demo.py runs it against a started stack).
"""

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
WEB = os.environ.get("WEB_URL", "http://127.0.0.1:8000")
SINK = os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:1080")
VENDOR = os.environ.get("KYC_VENDOR_URL", "http://127.0.0.1:8025")
FLOWER = os.environ.get("FLOWER_URL", "http://127.0.0.1:5555")
PAYMENTS = os.environ.get("PAYMENT_PROVIDER_URL", "http://127.0.0.1:8027")
ORDER = {"lines": [{"sku": "MUG-RED", "quantity": 2, "unit_price": "9.99", "currency": "EUR"}]}


class StepFailed(Exception):
    pass


def credentials() -> dict[str, str]:
    path = ROOT / "var" / "demo-credentials.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    found = {
        "token": os.environ.get("DEMO_TOKEN", saved.get("token", "")),
        "username": os.environ.get("DEMO_USERNAME", saved.get("username", "demo")),
        "password": os.environ.get("DEMO_PASSWORD", saved.get("password", "")),
    }
    if not found["token"]:
        sys.exit(
            "no demo credentials: start the stack with `make run` first (it writes var/demo-credentials.json)"
        )
    return found


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)  # polling the stack, bounded by the timeout
    raise StepFailed(f"gave up after {timeout:.0f} s waiting for {what}")


class Demo:
    def __init__(self) -> None:
        self.creds = credentials()
        self.api = requests.Session()
        self.api.headers["Authorization"] = f"Token {self.creds['token']}"
        self.failures = 0
        self.first_order: dict[str, Any] = {}

    # --- output -------------------------------------------------------------------
    def step(self, title: str, run: Callable[[], str]) -> None:
        started = time.monotonic()
        try:
            outcome = run()
        except (StepFailed, requests.RequestException, AssertionError, KeyError, ValueError) as exc:
            self.failures += 1
            print(f"  \u2717 {title}: {type(exc).__name__}: {exc}", flush=True)
            return
        print(f"  \u2713 {title} ({(time.monotonic() - started) * 1000:.0f} ms): {outcome}", flush=True)

    # --- helpers --------------------------------------------------------------------
    def sink_messages(self, message_id: str) -> list[dict[str, Any]]:
        return [
            m for m in requests.get(f"{SINK}/messages", timeout=5).json() if m["message_id"] == message_id
        ]

    def vendor(self, **settings: Any) -> None:
        requests.post(f"{VENDOR}/control", data=json.dumps(settings), timeout=5).raise_for_status()

    def payments(self, **settings: Any) -> None:
        requests.post(f"{PAYMENTS}/control", data=json.dumps(settings), timeout=5).raise_for_status()

    def polled(self, url: str, what: str, *wanted: str, timeout: float = 60) -> dict[str, Any]:
        """GET `url` until its `state` is one of `wanted`."""

        def check() -> dict[str, Any] | None:
            body = self.api.get(url, timeout=10).json()
            return body if body["state"] in wanted else None

        return dict(wait_for(f"{what} to be {' or '.join(wanted)}", check, timeout=timeout))

    def admin_action(self, admin: requests.Session, changelist: str, action: str, pk: str, note: str) -> None:
        form = {"action": action, "_selected_action": pk, "confirm": "yes", "note": note}
        form["csrfmiddlewaretoken"] = admin.cookies["csrftoken"]
        admin.post(changelist, data=form, headers={"Referer": changelist}, timeout=10).raise_for_status()

    def admin(self) -> requests.Session:
        """A logged-in admin session (the demo user is staff), with its CSRF token."""
        session = requests.Session()
        login = f"{WEB}/admin/login/"
        session.get(login, timeout=10)
        response = session.post(
            login,
            data={
                "username": self.creds["username"],
                "password": self.creds["password"],
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": login},
            timeout=10,
        )
        if "sessionid" not in session.cookies:
            raise StepFailed(f"admin login failed ({response.status_code})")
        return session

    def kyc_upload(self, marker: str) -> dict[str, Any]:
        # A minimal real PDF; the marker tells the vendor fake what to decide.
        pdf = b"%PDF-1.4\n% " + marker.encode() + b"\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
        wait_for("no open KYC submission of the demo user", self._no_open_submission, timeout=90)
        response = self.api.post(
            f"{WEB}/api/kyc/submissions/",
            data={"document_type": "passport"},
            files={"files": ("passport.pdf", io.BytesIO(pdf), "application/pdf")},
            headers={"Idempotency-Key": f"demo-kyc-{uuid.uuid4()}"},
            timeout=10,
        )
        if response.status_code != 202:
            raise StepFailed(f"upload answered {response.status_code}: {response.text[:200]}")
        return dict(response.json())

    def _no_open_submission(self) -> bool:
        listed = self.api.get(f"{WEB}/api/kyc/submissions/", timeout=10).json()
        items = listed["results"] if isinstance(listed, dict) else listed
        return not any(s["status"] in ("pending", "checking") for s in items)

    def submission_status(self, url: str, *wanted: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            body = self.api.get(f"{WEB}{url}", timeout=10).json()
            return body if body["status"] in wanted else None

        return dict(wait_for(f"the submission to be {' or '.join(wanted)}", check, timeout=90))

    # --- the tour -------------------------------------------------------------------
    def ready(self) -> str:
        body = requests.get(f"{WEB}/readyz", timeout=10).json()
        if body["status"] != "ready":
            raise StepFailed(f"not ready: {body['failed']}")
        return f"database, Redis and broker answer -> {WEB}/readyz"

    def order(self) -> str:
        key = f"demo-order-{uuid.uuid4()}"
        started = time.monotonic()
        response = self.api.post(
            f"{WEB}/api/orders", json=ORDER, headers={"Idempotency-Key": key}, timeout=10
        )
        elapsed = (time.monotonic() - started) * 1000
        if response.status_code != 201:
            raise StepFailed(f"answered {response.status_code}: {response.text[:200]}")
        self.first_order = {**response.json(), "key": key}
        return f"201 in {elapsed:.0f} ms, {response.json()['number']} -> {WEB}{response.headers['Location']}"

    def email(self) -> str:
        message_id = f"<order_confirmation.order-{self.first_order['id']}@taskyard.test>"
        [mail] = wait_for("the confirmation email in the SMTP sink", lambda: self.sink_messages(message_id))
        return f"'{mail['subject']}' in the SMTP sink -> {SINK}/messages/{mail['id']}"

    def invoice(self) -> str:
        url = f"{WEB}/api/orders/{self.first_order['id']}"
        detail = wait_for(
            "the invoice PDF",
            lambda: (body := self.api.get(url, timeout=10).json())["invoice"]["status"] == "ready" and body,
        )
        pdf = self.api.get(f"{WEB}{detail['invoice']['url']}", timeout=10)
        if not pdf.content.startswith(b"%PDF"):
            raise StepFailed("the invoice download is not a PDF")
        return f"{len(pdf.content):,} bytes of PDF -> {WEB}{detail['invoice']['url']} (with your token)"

    def replay(self) -> str:
        response = self.api.post(
            f"{WEB}/api/orders", json=ORDER, headers={"Idempotency-Key": self.first_order["key"]}, timeout=10
        )
        if (
            response.json()["id"] != self.first_order["id"]
            or response.headers.get("Idempotent-Replayed") != "true"
        ):
            raise StepFailed("the same Idempotency-Key created something new")
        return f"same key -> the same order {response.json()['number']}, Idempotent-Replayed: true, nothing enqueued"

    def kyc_approved(self) -> str:
        self.vendor(mode="ok")
        submission = self.kyc_upload("KYC-FAKE:approve")
        done = self.submission_status(submission["url"], "approved")
        message_id = f"<kyc_approved.kyc-{submission['id']}-approved@taskyard.test>"
        wait_for("the approval email", lambda: self.sink_messages(message_id))
        return f"202 -> vendor check -> {done['status']} ({', '.join(done['reason_codes'])}) -> email in the sink"

    def kyc_dead_letter(self) -> str:
        self.vendor(mode="reject", reject_status=422)
        submission = self.kyc_upload("KYC-FAKE:approve")
        self.submission_status(submission["url"], "failed")
        admin = self.admin()
        listing = admin.get(
            f"{WEB}/admin/jobs/deadletter/",
            params={"task_name": "kyc.run_check", "status__exact": "open"},
            timeout=10,
        ).text
        ids = re.findall(r"/admin/jobs/deadletter/(\d+)/change/", listing)
        if not ids:
            raise StepFailed("no open dead letter for kyc.run_check in the admin")
        dead_letter = max(int(i) for i in ids)
        self.vendor(mode="ok")
        admin.post(
            f"{WEB}/admin/jobs/deadletter/",
            data={
                "action": "replay",
                "_selected_action": str(dead_letter),
                "confirm": "Replay",
                "note": "demo: the vendor accepts again",
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
            },
            headers={"Referer": f"{WEB}/admin/jobs/deadletter/"},
            timeout=10,
        )
        done = self.submission_status(submission["url"], "approved")
        return (
            f"vendor 422 -> failed, dead letter #{dead_letter} -> {WEB}/admin/jobs/deadletter/{dead_letter}/change/ "
            f"-> replayed from the admin -> {done['status']}"
        )

    def export(self) -> str:
        existing = self.api.get(f"{WEB}/api/orders", params={"limit": 1}, timeout=10).json()["count"]
        for _ in range(max(0, 600 - existing)):  # enough orders for a few progress steps
            self.api.post(f"{WEB}/api/orders", json=ORDER, timeout=10).raise_for_status()
        response = self.api.post(f"{WEB}/api/orders/export", timeout=10)
        if response.status_code != 202:
            raise StepFailed(f"answered {response.status_code}")
        job_url = f"{WEB}{response.headers['Location']}"

        def finished() -> dict[str, Any] | None:
            job = self.api.get(job_url, timeout=10).json()
            filled = job["progress"] // 5
            print(
                f"\r    [{'#' * filled}{'.' * (20 - filled)}] {job['progress']:3d}% {job['progress_message'] or job['state']:<30}",
                end="",
            )
            return job if job["state"] in ("succeeded", "failed", "dead") else None

        job = wait_for("the export job", finished, timeout=120, interval=0.1)
        print()
        if job["state"] != "succeeded":
            raise StepFailed(f"the export ended {job['state']}: {job['error']}")
        rows = self.api.get(f"{WEB}{job['result_url']}", timeout=30).content.count(b"\n") - 1
        return f"202 -> job {job['id']} -> {rows} rows -> {WEB}{job['result_url']}"

    def fulfilment(self) -> str:
        order = self.api.post(f"{WEB}/api/orders", json=ORDER, timeout=10).json()
        self.api.post(f"{WEB}/api/orders/{order['id']}/pay", timeout=10).raise_for_status()
        self.payments(decline=[order["number"]])  # the provider declines this order's card
        key = {"Idempotency-Key": f"demo-fulfil-{uuid.uuid4()}"}
        response = self.api.post(f"{WEB}/api/orders/{order['id']}/fulfil", headers=key, timeout=10)
        if response.status_code != 202:
            raise StepFailed(f"fulfil answered {response.status_code}: {response.text[:200]}")
        flow_url = f"{WEB}{response.headers['Location']}"
        failed = {s["name"]: s for s in self.polled(flow_url, "the flow", "failed", "succeeded")["steps"]}
        capture, ship = failed["capture-payment"], failed["ship-order"]
        if (capture["error_code"], ship["state"]) != ("payment-declined", "cancelled"):
            raise StepFailed(f"expected a declined capture and no shipping: {capture}, {ship}")
        self.payments(decline=[])  # the card works again: retry the failed step from the admin
        admin, changelist = self.admin(), f"{WEB}/admin/jobs/flowstep/"
        listing = admin.get(
            changelist, params={"q": flow_url.rsplit("/", 1)[1], "state__exact": "failed"}, timeout=10
        )
        [step] = set(re.findall(r"/admin/jobs/flowstep/(\d+)/change/", listing.text))
        self.admin_action(admin, changelist, "retry", step, "demo: the customer updated the card")
        self.polled(flow_url, "the retried flow", "succeeded")
        message_id = f"<order_shipped.order-{order['id']}@taskyard.test>"
        wait_for("the shipped email", lambda: self.sink_messages(message_id))
        charges = (
            requests.get(f"{PAYMENTS}/stats", timeout=5).json()["captures_by_reference"].get(order["number"])
        )
        if charges != 1:
            raise StepFailed(f"{order['number']} was captured {charges} times at the provider")
        return (
            f"202 -> {flow_url}: capture-payment declined (payment-declined), ship-order cancelled, "
            f"flow failed -> step retried from the admin -> succeeded; 1 capture, shipped email in the sink"
        )

    def cancelled_export(self) -> str:
        for _ in range(20):  # their invoice PDFs queue ahead of the export
            self.api.post(f"{WEB}/api/orders", json=ORDER, timeout=10).raise_for_status()
        job_url = f"{WEB}{self.api.post(f'{WEB}/api/orders/export', timeout=10).headers['Location']}"
        cancel = self.api.post(f"{job_url}/cancel", timeout=10)
        if cancel.status_code != 202:
            raise StepFailed(f"cancel answered {cancel.status_code}: {cancel.text[:200]}")
        job = self.polled(job_url, "the export job", "cancelled", "succeeded", "dead")
        if job["state"] != "cancelled" or job["result_url"]:
            raise StepFailed(f"the export ended {job['state']}")
        return f"202 -> job {job['id']} -> cancel 202 -> cancelled, no file; a worker restart would not revive it"

    def fx(self) -> str:
        runs = []
        for _ in range(2):
            result = subprocess.run(
                [sys.executable, "manage.py", "run_schedule", "fx-sync-hourly", "--wait", "30"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=90,
            )
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        first, second = runs
        if second.get("slot_status") != "succeeded" or second["skipped"] < first.get("skipped", 0) + 1:
            raise StepFailed(f"the second run of the slot was not skipped: {runs}")
        rates = self.api.get(f"{WEB}/api/fx/rates", params={"base": "EUR"}, timeout=10).json()
        return (
            f"slot {first['slot_start']}: {first.get('slot_status')}; run again -> skipped "
            f"(skipped {second['skipped']}x); {len(rates['rates'])} EUR rates as of {rates['as_of']}"
        )

    def figures(self) -> str:
        text = requests.get(f"{WEB}/metrics", timeout=10).text
        done = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("taskyard_tasks_total{") and 'outcome="succeeded"' in line
        )
        if done < 1:  # the demo's own orders ran tasks: a worker's counters are not reaching /metrics
            raise StepFailed("/metrics counts no succeeded task (is PROMETHEUS_MULTIPROC_DIR shared?)")
        dead = [line for line in text.splitlines() if line.startswith("taskyard_dead_letters_open{")]
        auth = tuple(os.environ.get("FLOWER_BASIC_AUTH", _flower_auth()).split(":", 1))
        workers = requests.get(f"{FLOWER}/api/workers", auth=auth, timeout=10).json()  # type: ignore[arg-type]
        message_id = f"<order_confirmation.order-{self.first_order['id']}@taskyard.test>"
        if len(self.sink_messages(message_id)) != 1:
            raise StepFailed("the first order's email was sent more than once")
        return (
            f"{done:.0f} tasks succeeded, {len(dead)} open dead-letter group(s) -> {WEB}/metrics; "
            f"{len(workers)} worker(s) in Flower -> {FLOWER}/ ; the first order still has exactly one email"
        )

    def run(self) -> int:
        print(f"taskyard demo against {WEB}")
        for title, run in [
            ("the stack is ready", self.ready),
            ("create an order", self.order),
            ("its confirmation email", self.email),
            ("its invoice PDF", self.invoice),
            ("the same Idempotency-Key again", self.replay),
            ("a KYC upload, checked by the vendor", self.kyc_approved),
            ("a KYC upload the vendor rejects for good", self.kyc_dead_letter),
            ("an export job, with live progress", self.export),
            ("order fulfilment as a flow: payment declined, step retried", self.fulfilment),
            ("an export job, cancelled", self.cancelled_export),
            ("the FX sync, twice in one slot", self.fx),
            ("what moved (metrics, Flower)", self.figures),
        ]:
            self.step(title, run)
        print("done" if not self.failures else f"{self.failures} step(s) did not behave as stated")
        return 1 if self.failures else 0


def _flower_auth() -> str:
    path = ROOT / "var" / "flower-credentials"
    return path.read_text().strip() if path.exists() else ":"


if __name__ == "__main__":
    sys.exit(Demo().run())
