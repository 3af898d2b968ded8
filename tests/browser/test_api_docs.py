"""/docs and /redoc render in a real browser with the network blocked: every asset comes from
the service (ops/apidocs.py), and nothing is asked of any other host."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.stream.conftest import Served

REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
# axe's serious findings in Swagger UI's own markup and theme (its grey-on-white version
# stamps, a button nested in each operation's summary): upstream's to mend, not ours; any
# other finding on /docs fails.
SWAGGER_UI_OWN = {"color-contrast", "nested-interactive"}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


async def _operations(served: Served) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=served.url) as http:
        document = (await http.get("/openapi.json")).json()
    return [
        operation
        for operations in document["paths"].values()
        for method, operation in operations.items()
        if method in METHODS
    ]


async def test_swagger_ui_lists_every_operation_air_gapped(open_tab: Any, served: Served) -> None:
    operations = await _operations(served)
    tab = await open_tab()
    await tab.goto("/docs")
    page = tab.page
    await page.locator(".opblock").first.wait_for(state="visible")
    assert await page.locator(".opblock").count() == len(operations)
    assert "Allotment" in await page.locator(".info .title").inner_text()
    # An operation opens and shows its parameters: the bundle's scripts run, not just render.
    check = page.locator(".opblock-post", has_text="/v1/check").first
    await check.locator(".opblock-summary").click()
    await check.locator(".opblock-body").wait_for(state="visible")
    tab.assert_clean()
    # All but the first group of operations: the rest repeats the same markup.
    later = [".opblock-tag-section ~ .opblock-tag-section"]
    found = {violation["id"] for violation in await tab.axe(exclude=later)}
    assert found <= SWAGGER_UI_OWN, f"axe: {found - SWAGGER_UI_OWN} on /docs"


async def test_redoc_lists_every_operation_air_gapped(open_tab: Any, served: Served) -> None:
    operations = await _operations(served)
    tab = await open_tab()
    await tab.goto("/redoc")
    page = tab.page
    await page.locator("h1", has_text="Allotment").wait_for(state="visible")
    rendered = page.locator(".api-content [data-section-id*='/operation/']")
    await rendered.first.wait_for(state="attached")
    assert await rendered.count() == len(operations)
    # ReDoc's sidebar shows its maker's logo from their CDN: the page's policy refuses it,
    # so the browser never asks (and ReDoc hides the image).
    tab.assert_clean(refused=frozenset({REDOC_LOGO}))
    # No axe run here: over ReDoc's 17,000 elements it takes 5-15 s, however much of the
    # page it is told to skip (docs/api-docs.md says what it found when last run by hand).


async def test_the_harness_reports_other_hosts_and_axe_findings(open_tab: Any) -> None:
    """What makes the browser tests a proof: a page with no policy of its own that asks
    another host gets nothing, and the tab reports it; axe reports an unlabelled field."""
    tab = await open_tab()
    await tab.goto("/healthz")
    await tab.page.set_content('<img alt="" src="https://cdn.example.org/pixel.png">')
    await tab.page.wait_for_load_state("load")
    assert tab.foreign == ["https://cdn.example.org/pixel.png"]
    with pytest.raises(AssertionError, match="requests to other hosts"):
        tab.assert_clean()
    # And axe-core, injected into every page, finds what it should.
    await tab.page.set_content('<html><body><input type="text"></body></html>')
    assert "label" in {violation["id"] for violation in await tab.axe()}
