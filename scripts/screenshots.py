"""Screenshots for the README from the running stack (`make run`, after `make demo`).

Headless Chromium (the OS package) driven by Playwright: the admin's dead letters grouped
by fingerprint, Flower's worker dashboard, and the SMTP sink's page. Writes docs/images/.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
WEB = os.environ.get("WEB_URL", "http://127.0.0.1:8000")
FLOWER = os.environ.get("FLOWER_URL", "http://127.0.0.1:5555")
SINK = os.environ.get("SMTP_SINK_URL", "http://127.0.0.1:1080")


def main() -> None:
    chromium = shutil.which("chromium") or sys.exit("install Chromium first (make os-tools)")
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
        browser.close()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
