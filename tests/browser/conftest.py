"""Pages in a real browser: Debian's Chromium driven by Playwright, the app served over real
HTTP (uvicorn, as tests/stream serves it) on the test worker's PostgreSQL and Redis.

    served             the app over HTTP, one per test module
    chromium           one headless Chromium per test module
    open_tab(...)      a fresh browser context (its own cookies) and page, with the network
                       blocked: a request to any host but the service is aborted and
                       recorded, and `Tab.assert_clean()` fails the test on it

`make test` installs the browser (`make browser`: Debian's `chromium`, when missing and the
make runs as root with apt-get); where there is none these tests skip and say why. Never
`playwright install`: it downloads a browser build of its own.

ALLOTMENT_SCREENSHOTS=docs/images/portal makes `Tab.screenshot(name)` write PNGs there.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stores
from tests.stream.conftest import Served, serve

HOST = "allotment.test"
CHROMIUM = Path(os.environ.get("ALLOTMENT_TEST_CHROMIUM", "/usr/bin/chromium"))
# Flags that keep a headless Chromium quiet in a container: no sandbox (root), no GPU, and
# none of the background calls home (updates, sync, field trials) a blocked network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The service under a name that is not localhost, as users reach it (scripts may treat
    # localhost apart: Swagger UI's validator badge does).
    f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = os.environ.get("ALLOTMENT_SCREENSHOTS")
VIEWPORT = {"width": 1280, "height": 860}
BLOCKING = {"serious", "critical"}  # axe impacts that fail a page


def _why_no_browser() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (make install)"
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (
            f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium when run "
            "as root with apt-get (make test does); or set ALLOTMENT_TEST_CHROMIUM"
        )
    return None


# Per module, not per session: a served app left running would go on reading the journal and
# flushing its buffers under the rest of the suite on this worker.
@pytest.fixture(scope="module")
async def served(stores: Stores) -> AsyncIterator[Served]:
    async with serve(stores) as running:
        yield running


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    reason = _why_no_browser()
    if reason:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        # launch() gives the browser a fresh, temporary user-data-dir of its own.
        browser = await driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class Tab:
    """One page in its own context, on the service only."""

    def __init__(self, context: Any, page: Any, origin: str) -> None:
        self.context = context
        self.page = page
        self.origin = origin
        self.foreign: list[str] = []  # requests to other hosts, all aborted
        self.errors: list[str] = []  # uncaught exceptions in the page
        self.refused: list[str] = []  # what the page's Content-Security-Policy refused
        self.failed: list[str] = []  # the service's answers ≥ 400 that nobody expected
        self.expected_statuses: set[int] = set()

    async def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.origin + "/") or url.startswith(("data:", "blob:")):
            await route.continue_()
        else:
            self.foreign.append(url)
            await route.abort("blockedbyclient")

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.refused.append(message.text)

    def _response(self, response: Any) -> None:
        if response.status >= 400 and response.status not in self.expected_statuses:
            self.failed.append(f"{response.status} {response.request.method} {response.url}")

    async def goto(self, path: str, *, expect: int = 200) -> Any:
        self.expected_statuses = {expect} if expect >= 400 else set()
        response = await self.page.goto(self.origin + path, wait_until="load")
        assert response is not None and response.status == expect, (
            f"{path}: {response and response.status}, expected {expect}"
        )
        return response

    async def axe(self, *, exclude: list[str] | None = None) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on the page as it is now, less the
        parts `exclude` selects (repeated markup a long page need not have checked twice)."""
        results = await self.page.evaluate(
            """async (exclude) => {
                const context = exclude ? {exclude: exclude} : document;
                const r = await axe.run(context, {resultTypes: ['violations']});
                return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}));
            }""",
            exclude,
        )
        return [v for v in results if v["impact"] in BLOCKING]

    async def assert_accessible(self) -> None:
        violations = await self.axe()
        assert violations == [], f"{self.page.url}: axe found {violations}"

    def assert_clean(self, *, refused: frozenset[str] = frozenset()) -> None:
        """Nothing left for another host, nothing refused by the page's own policy but the
        URLs in `refused`, no script error, no unexpected error answer."""
        assert self.foreign == [], f"requests to other hosts (aborted): {self.foreign}"
        unexpected = [text for text in self.refused if not any(url in text for url in refused)]
        assert unexpected == [], f"refused by the page's Content-Security-Policy: {unexpected}"
        assert self.errors == [], f"errors in the page: {self.errors}"
        assert self.failed == [], f"unexpected error answers: {self.failed}"

    async def screenshot(self, name: str, *, full_page: bool = True) -> None:
        """Save the page as a PNG when ALLOTMENT_SCREENSHOTS names a folder."""
        if not SCREENSHOTS:
            return
        folder = ROOT / SCREENSHOTS
        folder.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


@pytest.fixture
async def open_tab(chromium: Any, served: Served) -> AsyncIterator[Any]:
    """`await open_tab()` → a Tab in a fresh context; every one opened is closed after."""
    contexts: list[Any] = []

    async def open_() -> Tab:
        context = await chromium.new_context(
            viewport=VIEWPORT, service_workers="block", locale="en-GB", timezone_id="UTC"
        )
        contexts.append(context)
        # Before any of the page's own scripts, and outside its Content-Security-Policy.
        await context.add_init_script(path=str(AXE))
        page = await context.new_page()
        page.set_default_timeout(15_000)
        tab = Tab(context, page, served.url.replace("127.0.0.1", HOST))
        await context.route("**/*", tab._route)
        page.on("pageerror", lambda error: tab.errors.append(str(error)))
        page.on("response", tab._response)
        page.on("console", tab._console)
        return tab

    try:
        yield open_
    finally:
        for context in contexts:
            await context.close()
