"""The dead-letter admin in a real browser (Chromium, driven by Playwright): log in, open the
grouped view, replay a group, see the result. Skipped where Chromium is not installed
(`make os-tools` installs it from the OS packages); in CI (CI=true) that is a failure."""

import uuid

import pytest
from django.contrib.auth.models import Permission

from core.errors import PermanentError
from jobs.dead_letters import dead_letter_record
from jobs.execution import TaskMeta
from jobs.models import DeadLetter, OutboxMessage
from tests.harness import require_os_tool

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def dead_letter(message: str) -> DeadLetter:
    task_id = str(uuid.uuid4())
    meta = TaskMeta(task_id, "probe.record", "default", 5, task_id, "", None, None)
    return dead_letter_record(
        meta=meta, exc=PermanentError(message), reason="permanent", args=[], kwargs={"key": "k"}
    )


def test_grouped_view_and_group_replay_in_a_browser(live_server, make_user):
    from playwright.sync_api import sync_playwright

    chromium = require_os_tool("chromium", "chromium-browser", package="chromium")

    operator = make_user("operator", is_staff=True)
    operator.user_permissions.add(
        Permission.objects.get(codename="view_deadletter"),
        Permission.objects.get(codename="act_on_deadletter"),
    )
    group = [dead_letter(f"vendor rejected order {n}") for n in range(3)]
    dead_letter("smtp said no")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        page = browser.new_page()
        page.goto(f"{live_server.url}/admin/login/?next=/admin/jobs/deadletter/groups/")
        page.fill("#id_username", "operator")
        page.fill("#id_password", "pw-for-tests-only")
        page.click("input[type=submit]")
        # the grouped view: the biggest group first, with its count and a replay button
        page.wait_for_selector("#dead-letter-groups")
        first_row = page.locator("tr.group").first
        assert first_row.locator("td.count").inner_text() == "3"
        assert group[0].fingerprint in first_row.inner_text()
        first_row.locator("input[name=note]").fill("vendor is back")
        first_row.locator("input.replay-group").click()
        page.wait_for_selector("text=Replayed 3 dead letter(s)")
        # the group is gone from the open groups; the other one stays
        assert page.locator("tr.group").count() == 1
        browser.close()
    statuses = set(DeadLetter.objects.filter(pk__in=[d.pk for d in group]).values_list("status", "note"))
    assert statuses == {("replayed", "vendor is back")}
    assert OutboxMessage.objects.filter(task_name="probe.record").count() == 3
