"""Screenshots for the README from the running stack (`make run`, after `make demo`).

Headless Chromium (the OS package) driven by Playwright: the admin's dead letters grouped
by fingerprint, Flower's worker dashboard, the SMTP sink's page, and one order's trace in
Spotlight (docs/tracing.md). Writes docs/images/.

    python scripts/screenshots.py           # all of them
    python scripts/screenshots.py traces    # only the traces: after creating an order, and
                                            # another with the SMTP sink set to fail-5xx
"""

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
WEB = os.environ.get("WEB_URL", "http://127.0.0.1:8000")
FLOWER = os.environ.get("FLOWER_URL", "http://127.0.0.1:5555")
SINK = os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:1080")
SPOTLIGHT = os.environ.get("SPOTLIGHT_URL", "http://127.0.0.1:8969")


def trace_screenshot(browser: Any) -> None:
    """The newest order's trace in Spotlight, its task runs unfolded."""
    page = browser.new_page(viewport={"width": 1800, "height": 1350})
    page.goto(f"{SPOTLIGHT}/telemetry/traces")
    page.get_by_text("POST api/orders").first.click()
    page.get_by_text("queue.process").first.wait_for()
    folded = page.locator("li:has-text('queue.process') > a div.bg-primary-600 svg.rotate-0")
    for _ in range(folded.count()):  # unfold each task run to show its SQL, SMTP and PDF spans
        folded.first.click()
        page.wait_for_timeout(300)  # the tree re-renders before the next toggle is found
    page.screenshot(path=str(OUT / "trace-one-order.png"))
    error_trace_screenshot(browser)


def error_trace_screenshot(browser: Any) -> None:
    """A dead-lettered confirmation email: from its Sentry event to its trace (T: link)."""
    page = browser.new_page(viewport={"width": 1800, "height": 1300})
    page.goto(f"{SPOTLIGHT}/telemetry/errors")
    page.wait_for_load_state("networkidle")
    for href in [a.get_attribute("href") for a in page.locator("a[href*='/telemetry/errors/']").all()]:
        page.goto(f"{SPOTLIGHT}{href}")
        page.wait_for_load_state("networkidle")
        if "send_confirmation_email" in page.inner_text("body"):
            page.locator("a[href*='/spans/']").first.click()  # the event's trace and span ids
            page.get_by_text("taskyard.task.outcome").first.wait_for()
            page.screenshot(path=str(OUT / "trace-error.png"))
            return


def main() -> None:
    chromium = shutil.which("chromium") or sys.exit("install Chromium first (make os-tools)")
    if sys.argv[1:] == ["traces"]:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
            )
            trace_screenshot(browser)
            browser.close()
        return
    creds = json.loads((ROOT / "var" / "demo-credentials.json").read_text())
    flower_user, flower_password = (ROOT / "var" / "flower-credentials").read_text().strip().split(":", 1)
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(f"{WEB}/admin/login/?next=/admin/jobs/deadletter/groups/")
        page.fill("#id_username", creds["username"])
        page.fill("#id_password", creds["password"])
        page.click("input[type=submit]")
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(OUT / "admin-dead-letters.png"))
        page.goto(f"{WEB}/admin/jobs/deadletter/")
        page.screenshot(path=str(OUT / "admin-dead-letter-list.png"))
        flower = browser.new_page(
            viewport={"width": 1280, "height": 640},
            http_credentials={"username": flower_user, "password": flower_password},
        )
        flower.goto(f"{FLOWER}/")
        flower.wait_for_load_state("networkidle")
        flower.screenshot(path=str(OUT / "flower.png"))
        sink = browser.new_page(viewport={"width": 1000, "height": 520})
        sink.goto(f"{SINK}/")
        sink.screenshot(path=str(OUT / "smtp-sink.png"))
        trace_screenshot(browser)
        browser.close()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
