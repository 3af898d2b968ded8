"""The customer portal (docs/portal.md) in a real browser, with the network blocked: signed in
through a one-time link, every page read, its numbers checked against the API, a seat
released through the form; a reused link, a forged CSRF token and another customer's URLs
refused; axe-core on every page; a screenshot of each (ALLOTMENT_SCREENSHOTS)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from allotment.kit.clock import utcnow
from tests.conftest import reset
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.factories.portal import portal_link
from tests.factories.usage import event, send
from tests.portal.test_pages import seed
from tests.stream.conftest import Served

PAGES = ("overview", "entitlements", "graph", "usage", "seats", "instances", "invoice")


@dataclass
class World:
    api: httpx.AsyncClient  # the API, in process, on the same database
    admin: dict[str, str]
    contract: str  # acme's

    async def get(self, path: str, **params: Any) -> Any:
        answer = await self.api.get(path, params=params, headers=self.admin)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
async def world(client: httpx.AsyncClient, served: Served) -> World:
    """acme and globex on the team plan; acme holds three seats, two instances, has used the
    API and exports, and gained the audit log in the policy's second version."""
    await reset(served.app)  # the served app's caches too: `client` emptied the tables
    admin = await create_key(served.app, scopes=["admin"])
    await publish_policy(client, admin, demo_document())
    contracts = {}
    for key in ("acme", "globex"):
        await create_customer(client, admin, key=key, name=key.title())
        contracts[key] = await create_contract(client, admin, customer=key, plan="team")
    await seed(client, admin)
    # Enough calls to draw bars against the 100,000 a month (the seed's 78 would not show),
    # over the last day, within this month and the contract.
    now = utcnow()
    batches = [
        event(f"b{n}", data={"count": count}, time=now - timedelta(hours=8 * n))
        for n, count in enumerate((23_000, 31_500, 17_250))
        if (now - timedelta(hours=8 * n)).month == now.month
    ]
    sent = await send(client, admin, batches)
    assert sent.json()["accepted"] == len(batches), sent.text
    made = await client.post("/v1/customers/globex/seats", json={"subject": "eve"}, headers=admin)
    assert made.status_code == 201, made.text
    document = demo_document()
    document["plans"]["team"]["features"].append("audit_log")
    await publish_policy(client, admin, document)
    return World(api=client, admin=admin, contract=contracts["acme"]["id"])


async def sign_in(open_tab: Any, world: World, customer: str = "acme") -> Any:
    tab = await open_tab()
    link = await portal_link(world.api, world.admin, customer)
    await tab.goto(link)  # 303 to the overview, which answers 200
    assert tab.page.url == f"{tab.origin}/portal/customers/{customer}"
    return tab


async def text(tab: Any, element_id: str) -> str:
    return (await tab.page.locator(f"#{element_id}").inner_text()).strip()


async def test_every_page_shows_the_apis_numbers_and_passes_axe(
    open_tab: Any, world: World
) -> None:
    tab = await sign_in(open_tab, world)
    page = tab.page
    entitlements = await world.get("/v1/customers/acme/entitlements")
    seats = entitlements["limits"]["seats"]
    for name in PAGES:
        if name != "overview":
            await page.locator(f"#nav-{name}").click()  # the navigation, as a person would
            await page.wait_for_url(f"**/portal/customers/acme/{name}")
        assert await page.locator(f"#nav-{name}").get_attribute("aria-current") == "page"
        await tab.assert_accessible()
        await tab.screenshot(name)

        if name == "overview":
            assert await text(tab, "contract-plan") == "team"
            assert await text(tab, "overview-seats") == f"{seats['held']} of {seats['limit']}"
            as_of = await page.locator("#invoice-subtotal").get_attribute("data-as-of")
            preview = await world.get(
                f"/v1/contracts/{world.contract}/invoice-preview", period=as_of[:7], as_of=as_of
            )
            assert (await text(tab, "invoice-subtotal")).split()[0] == str(preview["subtotal"])
        elif name == "entitlements":
            for feature in entitlements["features"]:
                row = page.locator(f"#feature-{feature['feature']}")
                shown = row.locator("[data-allowed]")
                allowed = "true" if feature["allowed"] else "false"
                assert await shown.get_attribute("data-allowed") == allowed, feature
            assert await page.locator("#entitlements tbody tr").count() == len(
                entitlements["features"]
            )
        elif name == "graph":
            assert "held" in (await page.locator("#node-plan-team").get_attribute("class") or "")
            assert await page.locator("#feature-graph").is_visible()
        elif name == "usage":
            for meter in ("api_calls", "exports"):
                total = (await world.get("/v1/customers/acme/usage", meter=meter))["total"]
                shown = page.locator(f"#usage-total-{meter}")
                assert await shown.get_attribute("data-value") == str(total)
                assert (await shown.inner_text()).replace(",", "") == str(total)
        elif name == "seats":
            held = (await world.get("/v1/customers/acme/seats"))["items"]
            assert await text(tab, "seats-held") == str(seats["held"]) == str(len(held)) == "3"
            options = await page.locator("#release-subject option").all_inner_texts()
            assert sorted(o.split()[0] for o in options) == sorted(s["subject"] for s in held)
        elif name == "instances":
            instances = entitlements["limits"]["instances"]
            assert await text(tab, "instances-held") == str(instances["held"]) == "2"
            assert await page.locator("#instances-vm").is_visible()
            assert await page.locator("#instances-container").is_visible()
        elif name == "invoice":
            as_of = await page.locator("#invoice-lines").get_attribute("data-as-of")
            preview = await world.get(
                f"/v1/contracts/{world.contract}/invoice-preview", period=as_of[:7], as_of=as_of
            )
            assert (await text(tab, "invoice-subtotal")).split()[0] == str(preview["subtotal"])
            rows = page.locator("#invoice-lines tbody tr")
            assert await rows.count() == len(preview["lines"])
            async with page.expect_download() as download:
                await page.locator("#invoice-csv").click()
            csv = (await (await download.value).path()).read_text()
            assert csv.splitlines()[0].startswith("code,description,quantity")
            assert len(csv.splitlines()) == len(preview["lines"]) + 1

    await page.locator("#nav-releases").click()
    await page.wait_for_url("**/portal/customers/acme/releases")
    assert re.search(r"You gained:\s*audit_log", await page.locator("#main").inner_text())
    await tab.assert_accessible()
    await tab.screenshot("releases")
    tab.assert_clean()


async def test_the_keyboard_reaches_the_skip_link_first(open_tab: Any, world: World) -> None:
    tab = await sign_in(open_tab, world)
    await tab.page.keyboard.press("Tab")
    focused = await tab.page.evaluate("document.activeElement.textContent.trim()")
    assert focused == "Skip to content"
    await tab.page.keyboard.press("Enter")
    assert await tab.page.evaluate("document.activeElement.id") == "main"
    tab.assert_clean()


async def test_a_seat_is_released_through_the_form(open_tab: Any, world: World) -> None:
    tab = await sign_in(open_tab, world)
    page = tab.page
    await page.locator("#nav-seats").click()
    await page.locator("#release-subject").select_option("grace")
    await page.locator("#release-button").click()
    await page.locator("#released").wait_for()
    assert await text(tab, "released") == "Released the seat of grace."
    await tab.assert_accessible()
    await tab.screenshot("seats-released")
    held = [seat["subject"] for seat in (await world.get("/v1/customers/acme/seats"))["items"]]
    assert sorted(held) == ["ada", "linus"]
    assert await text(tab, "seats-held") == "2"
    tab.assert_clean()


async def test_a_used_link_is_refused_with_a_page(open_tab: Any, world: World) -> None:
    link = await portal_link(world.api, world.admin, "acme")
    first = await open_tab()
    await first.goto(link)
    again = await open_tab()  # another browser, with the link from the same email
    await again.goto(link, expect=410)
    assert await text(again, "page-title") == "Link already used"
    assert await again.page.locator("#nav").count() == 0  # no session: no pages offered
    await again.assert_accessible()
    await again.screenshot("link-used")
    first.assert_clean()
    again.assert_clean()


async def test_a_forged_csrf_token_changes_nothing(open_tab: Any, world: World) -> None:
    tab = await sign_in(open_tab, world)
    page = tab.page
    await page.locator("#nav-seats").click()
    await page.locator("#release-subject").select_option("ada")
    # The form as a forger would post it: the session's cookie, a token of their own.
    await page.locator("#release-form input[name=csrf]").evaluate(
        "i => { i.value = 'f'.repeat(64) }"
    )
    tab.expected_statuses = {403}
    async with page.expect_response("**/seats/release") as answer:
        await page.locator("#release-button").click()
    assert (await answer.value).status == 403
    await page.locator("#message").wait_for()
    await tab.assert_accessible()
    held = [seat["subject"] for seat in (await world.get("/v1/customers/acme/seats"))["items"]]
    assert "ada" in held and len(held) == 3
    tab.assert_clean()


async def test_another_customers_pages_are_not_found(open_tab: Any, world: World) -> None:
    tab = await sign_in(open_tab, world, "acme")
    for name in (*PAGES, "releases"):
        path = "/portal/customers/globex" + ("" if name == "overview" else f"/{name}")
        await tab.goto(path, expect=404)
        assert "globex" not in await tab.page.locator("#main").inner_text()
    await tab.goto("/portal/customers/globex/invoice.csv", expect=404)
    await tab.assert_accessible()
    # Releasing globex's seat with acme's session and a valid token: acme's form, aimed there.
    await tab.goto("/portal/customers/acme/seats")
    await tab.page.locator("#release-form").evaluate(
        "f => { f.action = '/portal/customers/globex/seats/release' }"
    )
    await tab.page.locator("#release-subject").evaluate("s => { s.options[0].value = 'eve' }")
    tab.expected_statuses = {404}
    async with tab.page.expect_response("**/globex/seats/release") as answer:
        await tab.page.locator("#release-button").click()
    assert (await answer.value).status == 404
    held = (await world.get("/v1/customers/globex/seats"))["items"]
    assert [seat["subject"] for seat in held] == ["eve"]
    tab.assert_clean()


async def test_a_narrow_screen_and_a_long_subject_never_scroll_the_page_sideways(
    open_tab: Any, world: World
) -> None:
    subject = "l" * 240 + "@long.example"  # within the 256 a subject may have
    made = await world.api.post(
        "/v1/customers/acme/seats", json={"subject": subject}, headers=world.admin
    )
    assert made.status_code == 201, made.text
    tab = await sign_in(open_tab, world)
    page = tab.page
    for width in (1280, 375):
        await page.set_viewport_size({"width": width, "height": 800})
        for name in (*PAGES, "releases"):
            path = "/portal/customers/acme" + ("" if name == "overview" else f"/{name}")
            await tab.goto(path)
            wide = await page.evaluate("document.documentElement.scrollWidth")
            assert wide <= width, f"{name} at {width} px is {wide} px wide"
            if width == 375 and name in ("seats", "graph"):
                await tab.assert_accessible()
                await tab.screenshot(f"{name}-375")
    tab.assert_clean()
