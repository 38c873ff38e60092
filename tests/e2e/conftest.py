"""Browser tests: Playwright drives Debian's Chromium against pytest-django's live server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from annotate.models import MemberRole
from annotate.services import membership_set
from tests.factories import UserFactory

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
PASSWORD = "correct horse battery"

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between
# browser steps are still plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def _require_built_ui() -> None:
    index = Path(settings.FRONTEND_DIST) / "index.html"
    assert index.is_file(), f"{index} is missing: build the UI first (`make frontend`)."
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make browser` installs it."


@pytest.fixture(scope="session")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    _require_built_ui()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.failed_call = report.failed
    return report


@pytest.fixture
def page(request, browser, live_server) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=live_server.url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    if getattr(request.node, "failed_call", False):  # what the browser showed, for the record
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"failed-{request.node.name}.png"))
    context.close()


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def login(page, username: str, password: str = PASSWORD, *, then: str = "/app/") -> None:
    """Sign in through the form with the keyboard only."""
    page.goto(then)
    page.get_by_label("Username").wait_for()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.get_by_role("button", name="Sign out").wait_for()


@pytest.fixture
def e2e_annotator(project):
    user = UserFactory(username="alice")
    membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
    return user


@pytest.fixture
def e2e_admin(db):
    return UserFactory(username="boss", is_staff=True, is_superuser=True)


def judge_until_empty(page, key: str | Callable[[Any], str], min_view_ms: int) -> int:
    """Judge each pair shown with `key` (or the key `key(page)` picks for it), after reading it
    for `min_view_ms`, until nothing is left; the number of pairs judged."""
    judged = 0
    while True:
        page.locator("main.pair, .status.empty").first.wait_for()
        if page.locator(".status.empty").count():
            return judged
        assignment = page.locator("main.pair").get_attribute("data-assignment")
        page.wait_for_timeout(min_view_ms + 100)
        page.keyboard.press(key(page) if callable(key) else key)
        judged += 1
        page.wait_for_function(
            "id => document.querySelector('main.pair')?.dataset.assignment !== id", arg=assignment
        )


def alphabetical_key(page) -> str:
    """The key for the answer whose text sorts first: a judge every annotator agrees with."""
    left = page.locator('[data-side="left"] .markdown').inner_text()
    right = page.locator('[data-side="right"] .markdown').inner_text()
    return "1" if left <= right else "2"
