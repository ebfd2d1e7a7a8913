"""The status page in a real browser (Playwright driving Debian's chromium), served by a
running ``reconciler run`` on 127.0.0.1 with a real git source and the sample build system."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import DesiredState, Upstream, git_host
from .gitrepo import DesiredRepo
from .test_run import Running, running

CHROMIUM = Path("/usr/bin/chromium")
XSS = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
FORGE = "https://forge.example/desired-state/commit/{sha}"
#: Set to write the screenshot the README shows (docs/status-page.png).
SCREENSHOT_ENV = "RECONCILER_DOCS_SCREENSHOT"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None or not CHROMIUM.exists(),
    reason="needs the playwright package and Debian's /usr/bin/chromium (CI installs both)",
)


@pytest.fixture
def world(
    tmp_path: Path, desired_state: DesiredState, upstream: Upstream
) -> tuple[Path, DesiredRepo]:
    msg = f"Add SIG core {XSS}"
    return git_host(tmp_path, desired_state, upstream, msg, "Mallory Markup", interval=3600,
                    commit_url=FORGE)  # fmt: skip


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox"])  # fmt: skip
        try:
            yield b
        finally:
            b.close()


def finished(run: Running) -> float:
    return float(httpx.get(f"{run.base}/healthz", timeout=5).json().get("finished") or 0)


def wait_pass(run: Running, after: float, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while finished(run) <= after:
        assert run.proc.poll() is None, "reconciler run ended"
        assert time.monotonic() < deadline, "no pass finished"
        time.sleep(0.1)


def cell(page: Any, stage: str) -> Any:
    return page.locator(f'tr[data-release="core/9"] td[data-stage="{stage}"]')


def state_of(page: Any, stage: str) -> str:
    return str(cell(page, stage).locator("[data-state]").get_attribute("data-state"))


def test_the_grid_follows_a_promotion_and_shows_a_blocked_one(
    world: tuple[Path, DesiredRepo], tmp_path: Path
) -> None:
    config, repo = world
    with running(config) as run, browser() as b:
        wait_pass(run, 0)
        page = b.new_page(viewport={"width": 1280, "height": 900})
        page.goto(run.base + "/")
        assert [state_of(page, s) for s in ("compose", "staging", "production")] == [
            "Synced", "Synced", "Synced",
        ]  # fmt: skip
        staged = cell(page, "staging").locator(".id").nth(1).inner_text()
        assert staged.startswith("SIG-core-9-")
        assert "actual -" in " ".join(cell(page, "production").inner_text().split())

        before = finished(run)
        repo.set_release(production=staged)
        repo.commit(f"Promote {staged}", author="Bob Builder")
        wait_pass(run, before)
        page.reload()
        assert state_of(page, "production") == "Synced"
        production = " ".join(cell(page, "production").inner_text().split())
        assert f"actual {staged}" in production and "Synced" in production
        assert "Promote" in page.locator("#revision").inner_text()
        assert "Bob Builder" in page.locator("#history").inner_text()
        page.screenshot(path=str(tmp_path / "status-page-1280.png"), full_page=True)

        before = finished(run)
        repo.set_release(production="SIG-core-9-20200101.0")
        repo.commit("Pin a compose that does not exist", author="Bob Builder")
        wait_pass(run, before)
        page.reload()
        assert state_of(page, "production") == "Blocked"
        assert "does not exist" in cell(page, "production").inner_text()
        pending = page.locator('#pending [data-target="core/9/production"]')
        assert "Blocked" in pending.inner_text() and "does not exist" in pending.inner_text()
        # a colour and a word: the state is said in text too
        assert "Blocked" in cell(page, "production").locator(".state").inner_text()
        shot = tmp_path / "status-page-blocked.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get(SCREENSHOT_ENV):
            shutil.copy(shot, os.environ[SCREENSHOT_ENV])

        # the release's own page, linked from the grid
        page.click('tr[data-release="core/9"] th a')
        assert page.url.endswith("/release/core/9")
        assert "core-common" in page.locator("table.repos").first.inner_text()


def test_an_xss_commit_message_is_inert_and_nothing_overflows_at_390px(
    world: tuple[Path, DesiredRepo], tmp_path: Path
) -> None:
    config, _repo = world
    with running(config) as run, browser() as b:
        wait_pass(run, 0)
        page = b.new_page(viewport={"width": 390, "height": 844})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(run.base + "/")
        page.wait_for_timeout(300)  # an onerror handler, were there one, would have run
        assert dialogs == []
        assert page.locator("script").count() == 0, "no script element was injected"
        assert page.locator("img").count() == 0, "no img element was injected"
        assert XSS in page.locator("#revision .commit-message").inner_text()
        assert "Mallory Markup <mallory@example.org>" in page.locator("#history").inner_text()

        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"scrollWidth {widths[0]} > innerWidth {widths[1]}"
        page.screenshot(path=str(tmp_path / "status-page-390.png"), full_page=True)

        page.set_viewport_size({"width": 1280, "height": 800})
        page.reload()
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1]
        page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
