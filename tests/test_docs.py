"""The docs stay true: generated tables match the code, links and named files exist, nothing
points outside the repository, and the README stays a front page."""

import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from bench.scenarios.cost_docs import (
    PROFILE_CUTS_2,
    PROFILE_RUNS_2,
    cost_comparison,
    cuts_table,
    median_comparison,
    runs_in_order,
)
from bench.scenarios.order_creation import floor_comparison
from bench.scenarios.tracing import DOCUMENTED_RUN, cost_table
from jobs.management.commands.reliability_report import ORDER, RESULTS, render
from jobs.management.commands.retry_table import documented_tasks, retry_table
from jobs.management.commands.schedule_table import schedule_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
README_MAX_LINES = 250
# Product code, scripts and docs: what a reader of the repository follows.
PRODUCT = [
    "config",
    "core",
    "jobs",
    "orders",
    "kyc",
    "fx",
    "fulfilment",
    "notifications",
    "fakes",
    "scripts",
    "bench",
    "docs",
]
# Pages that point at code by path; every such path must exist.
NAMING_CODE = [README, DOCS / "architecture.md", DOCS / "writing-a-task.md"]
TOP_LEVEL = (
    r"(?:config|core|jobs|orders|kyc|fx|fulfilment|notifications|fakes|scripts|bench|tests|deploy|docs)"
)

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PARENT = re.compile(r"(?<![\w.])\.\./")  # "../x", not the ellipsis in ".../cancel"


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(markdown: str) -> str:
    """The Markdown without its fenced code blocks (a `#` there is a comment, not a heading)."""
    return FENCE.sub("", markdown)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", prose(markdown), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def local_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(text(page))) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def product_files() -> list[Path]:
    files = [README]
    for top in PRODUCT:
        files += [
            p
            for p in (ROOT / top).rglob("*")
            if p.suffix in {".md", ".py"} and p.is_file() and "node_modules" not in p.parts  # npm installs
        ]
    return files


# --- generated tables -------------------------------------------------------------------
def test_retry_table_in_the_docs_matches_the_task_policies():
    # the production tasks: the test-only probe tasks are installed in the test settings only
    production = [row for row in documented_tasks() if not row.name.startswith(("probe.", "tests."))]
    assert retry_table(production) in text(DOCS / "failures.md"), (
        "run `manage.py retry_table` and paste its output into docs/failures.md"
    )


def test_schedule_table_in_the_docs_matches_the_schedules():
    table = schedule_table(import_string(settings.PERIODIC_SCHEDULES))
    assert table in text(DOCS / "schedules.md"), (
        "run `manage.py schedule_table` and paste its output into docs/schedules.md"
    )


# --- the README is a front page -----------------------------------------------------------
def test_readme_is_at_most_250_lines():
    lines = len(text(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to a page in docs/"


def test_readme_links_every_docs_page():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in local_links(README)}
    missing = [str(page.relative_to(ROOT)) for page in PAGES[1:] if page.resolve() not in linked]
    assert not missing, f"README's Docs index does not link {missing}"


# --- links and references ----------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_resolves(page):
    broken = []
    for target in local_links(page):
        path, _, anchor = target.partition("#")
        if not path:
            resolved = page
        elif path.startswith("/"):  # root-relative: GitHub resolves it against the repository
            resolved = ROOT / path.lstrip("/")
        else:
            resolved = page.parent / path
        resolved = resolved.resolve()
        found = resolved.is_relative_to(ROOT) and resolved.exists()
        if found and anchor and resolved.suffix == ".md":
            found = anchor in heading_anchors(text(resolved))
        if not found:
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that lead nowhere: {broken}"


def test_nothing_refers_outside_the_repository():
    offenders = []
    for path in product_files():
        content = text(path)
        if "DESIGN.md" in content or PARENT.search(content):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, (
        f"{offenders} mention DESIGN.md or a ../ path; the design lives in docs/architecture.md "
        "and links stay inside the repository (root-relative /path from docs/ pages)"
    )


def test_docs_pages_named_in_code_exist():
    named = {
        match
        for path in product_files()
        if path.suffix == ".py"
        for match in re.findall(r"\bdocs/[\w./-]+\.md\b", text(path))
    }
    missing = sorted(name for name in named if not (ROOT / name).is_file())
    assert not missing, f"code cites docs pages that do not exist: {missing}"


@pytest.mark.parametrize("page", NAMING_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_named_by_the_page_exist(page):
    named = re.findall(rf"`({TOP_LEVEL}/[\w./*-]*)`", text(page))
    assert named, page
    missing = [name for name in named if not any(ROOT.glob(name.rstrip("/")))]
    assert not missing, f"{page.relative_to(ROOT)} names files that do not exist: {missing}"


# --- "How to add a task" shows the real code ------------------------------------------------
def test_how_to_add_a_task_quotes_the_code_it_names():
    page = text(DOCS / "writing-a-task.md")
    named = set(re.findall(rf"`({TOP_LEVEL}/[\w./-]+\.(?:py|txt))`", page))
    source = "\n".join(text(ROOT / name) for name in sorted(named))
    misquoted = [
        line.strip()
        for block in re.findall(r"^```(?:python|sql)\n(.*?)^```", page, flags=re.MULTILINE | re.DOTALL)
        for line in block.splitlines()
        if line.strip() and "..." not in line and line.strip() not in source
    ]
    assert not misquoted, f"docs/writing-a-task.md quotes lines its files no longer have: {misquoted}"
    example = "orders.send_confirmation_email"
    assert example in text(ROOT / "tests" / "jobs" / "registered_tasks.txt"), example


def test_reliability_results_in_the_docs_are_rendered_from_the_committed_results():
    results = json.loads(RESULTS.read_text())
    assert render(results) in text(DOCS / "reliability.md"), (
        "run `manage.py reliability_report` (after a chaos run: `--from var/chaos-results.json`)"
    )
    # from a run of the whole suite: every scenario, one commit
    assert set(ORDER) <= set(results["scenarios"]), set(ORDER) - set(results["scenarios"])


def test_the_create_against_its_floor_is_rendered_from_the_bench_results():
    assert floor_comparison() in text(DOCS / "performance.md"), (
        "paste bench.scenarios.order_creation.floor_comparison() into docs/performance.md"
    )


def test_the_cost_of_tracing_is_rendered_from_the_bench_results():
    results = json.loads((ROOT / "bench" / "results" / DOCUMENTED_RUN).read_text())
    assert cost_table(results) in text(DOCS / "performance.md"), (
        "paste bench.scenarios.tracing.cost_table() of the documented run into docs/performance.md"
    )


def test_the_cost_per_order_before_and_after_is_rendered_from_the_bench_results():
    table = cost_comparison()
    for page in (DOCS / "performance.md", ROOT / "README.md"):
        assert table in text(page), f"paste bench.scenarios.cost_docs.cost_comparison() into {page.name}"


def test_the_second_rounds_repeated_runs_are_rendered_from_the_bench_results():
    page = text(DOCS / "performance.md")
    assert median_comparison() in page, (
        "paste bench.scenarios.cost_docs.median_comparison() into performance.md"
    )
    assert runs_in_order() in page, "paste bench.scenarios.cost_docs.runs_in_order() into performance.md"
    assert cuts_table(PROFILE_RUNS_2, PROFILE_CUTS_2) in page, (
        "paste bench.scenarios.cost_docs.cuts_table(PROFILE_RUNS_2, PROFILE_CUTS_2) into performance.md"
    )


def test_what_each_cut_took_of_its_roles_profile_is_rendered_from_the_saved_profiles():
    assert cuts_table() in text(DOCS / "performance.md"), (
        "paste bench.scenarios.cost_docs.cuts_table() into docs/performance.md"
    )
