"""The TA's page in a real browser: upload a class, watch it grade, open a student, download the CSV.

Runs headless Debian chromium through Playwright against a live `grader serve` on loopback.
A screenshot of the page is saved under test-artifacts/ when a test fails.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT
from tests.intake_fixtures import blackboard_entries, write_zip
from tests.service_helpers import LiveServer

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
ASSIGNMENT = "Homework 5"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it",
)


def blackboard_zip(path: Path) -> dict[str, float]:
    """A Blackboard "Download Assignment" zip of five students; returns each username's expected total."""
    students = {
        "alice": ("correct.py", 10.0),
        "bob": ("grad_b_keepdims.py", 9.0),
        "carol": ("typo_arange.py", 7.0),
        "dave": ("starter.py", 0.0),
        "erin": ("memory_blowup_in_l2.py", 8.0),
    }
    stamp = "2026-11-20-23-59-01"
    write_zip(path, blackboard_entries(ASSIGNMENT, [
        (username, f"{username.title()} Student", stamp, {"layers.py": (EXAMPLES / sample).read_bytes()})
        for username, (sample, _) in students.items()
    ]))
    return {username: total for username, (_, total) in students.items()}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield launched
        launched.close()


@pytest.fixture()
def page(browser, request: pytest.FixtureRequest) -> Iterator[object]:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module: no test here needs it empty (each looks only at its own batch)."""
    folder = tmp_path_factory.mktemp("web")
    live = LiveServer(folder / "data", folder / "server.log").start()
    yield live
    live.stop()


def test_upload_a_blackboard_class_and_review_it(page, server: LiveServer, tmp_path: Path) -> None:
    expected = blackboard_zip(tmp_path / "gradebook_hw5.zip")
    page.goto(server.url + "/")
    assert page.get_by_role("heading", name="Grade submissions").is_visible()
    page.set_input_files("#file-input", str(tmp_path / "gradebook_hw5.zip"))
    page.wait_for_url("**/batches/*", timeout=30_000)
    page.wait_for_function("document.getElementById('batch-status').textContent.trim() === 'done'", timeout=60_000)
    page.wait_for_selector("#students tbody tr >> nth=4")
    assert "5 of 5 graded" in page.inner_text("#progress-text")
    assert "blackboard" in page.inner_text(".meta").lower()

    rows = page.locator("#students tbody tr")
    cells = [rows.nth(i).locator("td") for i in range(rows.count())]
    totals = {row.nth(0).inner_text().strip(): float(row.nth(2).inner_text()) for row in cells}
    assert totals == expected
    assert page.locator("svg.chart").count() == 2
    flagged = page.locator("#students tbody tr.flagged")
    assert flagged.count() == 1 and "erin" in flagged.inner_text() and "memory limit" in flagged.inner_text()

    # sorting by total, descending, puts alice first
    total_header = page.locator("#students th button", has_text="Total")
    total_header.click()
    total_header.click()
    assert page.locator("#students tbody tr").first.locator("td").first.inner_text().strip() == "alice"

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Grades (CSV)").click()
    csv_text = Path(download_info.value.path()).read_text()
    rows_by_key = {row[0]: row for row in csv.reader(io.StringIO(csv_text))}
    for username, total in expected.items():
        assert float(rows_by_key[username][2]) == total

    page.get_by_role("link", name="carol").click()
    page.wait_for_url("**/submissions/*")
    assert page.get_by_role("heading", name="Problem 3: Softmax loss").is_visible()
    assert "AttributeError" in page.inner_text("main")
    assert page.locator("ol.source li").count() > 30
    assert page.locator("ol.source li.marked").count() >= 1

    page.goto(server.url + "/")
    assert page.get_by_role("link", name="gradebook_hw5.zip").is_visible()


def test_with_a_token_the_page_asks_for_it_first(page, tmp_path: Path) -> None:
    live = LiveServer(tmp_path / "data", tmp_path / "server.log", GRADER_API_TOKENS="s3cret-token")
    try:
        live.start()
        page.goto(live.url + "/")
        assert page.get_by_role("heading", name="Sign in").is_visible()
        assert "Past batches" not in page.inner_text("body")
        page.fill("#token", "wrong")
        page.click("button[type=submit]")
        assert page.get_by_role("alert").is_visible()
        page.fill("#token", "s3cret-token")
        page.click("button[type=submit]")
        page.wait_for_url(live.url + "/")
        assert page.get_by_role("heading", name="Past batches").is_visible()
    finally:
        live.stop()


def test_the_page_loads_nothing_from_other_hosts(page, server: LiveServer) -> None:
    hosts = set()
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    page.goto(server.url + "/")
    page.goto(server.url + "/docs")
    page.wait_for_load_state("networkidle")
    assert hosts == {f"127.0.0.1:{server.port}"}
