"""Browser tests: docdesk's pages in Debian's Chromium, driven by Playwright.

The service runs for real on a free loopback port, with its embedded
simulator standing in for the Document Server; the browser loads the
simulator's ``api.js`` exactly as it would load ONLYOFFICE's. Each step
leaves a screenshot in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp

from docdesk.formats import blank_document
from docdesk.settings import Settings
from docdesk.testing import fast_settings, serve_app_at
from docdesk.web import create_app
from docdesk.web.pages import PAGE_ROUTES

from .form_host import HOST_ROUTES

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# Without the networking switches Chromium calls Google's hosts at start-up;
# the network here is closed and the tests talk to loopback only.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 812}


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module; the sync API runs outside any event loop."""
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "Chromium not found: apt-get install chromium "
            "(the tests drive Debian's Chromium through Playwright)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclass(frozen=True)
class Service:
    """docdesk serving on ``url``, and a client for its JSON API."""

    url: str
    api: httpx.Client

    def upload(self, name: str, extension: str = "docx") -> str:
        response = self.api.post(
            "/api/documents", files={"file": (name, blank_document(extension))}
        )
        response.raise_for_status()
        document_id: str = response.json()["id"]
        return document_id

    def versions(self, document_id: str) -> list[dict[str, Any]]:
        response = self.api.get(f"/api/documents/{document_id}/versions")
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()["versions"]
        return found

    def wait_for_versions(self, document_id: str, count: int) -> None:
        """Until the document has ``count`` versions: a DS save is asynchronous."""
        deadline = time.monotonic() + 15
        while len(self.versions(document_id)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} versions"
            time.sleep(0.05)


def with_pages(app: Starlette) -> Starlette:
    """The app with the pages and the test's host page in front.

    Temporary until create_app mounts PAGE_ROUTES itself: then only the
    host page is added here.
    """
    names = {getattr(route, "name", None) for route in app.router.routes}
    front = [] if "documents" in names else list(PAGE_ROUTES)
    app.router.routes[:0] = [*front, *HOST_ROUTES]
    return app


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start docdesk (with ``env`` over the defaults) on a free port."""
    running: list[Any] = []

    def start(env: dict[str, str] | None = None) -> Service:
        def make_app(url: str) -> ASGIApp:
            settings = Settings.from_env(
                {
                    "DOCDESK_DATA_DIR": str(tmp_path / f"data{len(running)}"),
                    "DOCDESK_PUBLIC_URL": url,
                    **(env or {}),
                }
            )
            fast = fast_settings(secret=settings.jwt_secret)
            return with_pages(create_app(settings, simulator_settings=fast))

        server = serve_app_at(make_app)
        started = server.__enter__()
        api = httpx.Client(base_url=started.url, timeout=30)
        running.append((server, api))
        return Service(started.url, api)

    yield start
    for server, api in reversed(running):
        api.close()
        server.__exit__(None, None, None)


@pytest.fixture
def service(make_service: Callable[..., Service]) -> Service:
    """docdesk with no Document Server configured: the simulator is mounted."""
    return make_service()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh desktop-sized page; a script error on it fails the test."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    if errors:
        pytest.fail(f"script errors on the page: {errors}")


@pytest.fixture
def phone(browser: Any) -> Iterator[Any]:
    """A page the size of a phone's screen."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Any, str], None]:
    """Keep a full-page screenshot named after the test and the step."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"^test_", "", request.node.name)

    def take(page: Any, step: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{test}--{step}.png"), full_page=True)

    return take
