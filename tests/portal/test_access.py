"""Portal access: one-time links, the session cookie, CSRF, one customer per session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.portal.models import PortalLink
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.portal import csrf_of, portal_link, signed_in


def new_browser(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_link_signs_in_once_with_a_strict_http_only_cookie(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    link = await portal_link(client, admin, team)
    async with new_browser(app) as browser:
        opened = await browser.get(link)
        assert opened.status_code == 303
        assert opened.headers["location"] == "/portal/customers/acme"
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/portal" in cookie
        assert "secure" not in cookie  # plain http here; https sets it
        page = await browser.get("/portal/customers/acme")
        assert page.status_code == 200
        assert 'id="contract-plan">team<' in page.text
        assert "text/html" in page.headers["content-type"]
        assert "script-src" not in page.headers["content-security-policy"]
    async with new_browser(app) as other:
        again = await other.get(link)
        assert again.status_code == 410
        assert "already used" in again.text and "<h1" in again.text


async def test_an_expired_or_unknown_link_gets_a_page_not_a_trace(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    link = await portal_link(client, admin, team)
    at = datetime(2026, 12, 3, 14, 5, 30, tzinfo=UTC)  # in the past
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(update(PortalLink).values(expires_at=at))
    async with new_browser(app) as browser:
        expired = await browser.get(link)
        assert expired.status_code == 401
        # When, in words: not an ISO timestamp.
        assert "expired on 3 December 2026 at 14:05 UTC." in expired.text
        assert "2026-12-03T" not in expired.text
        # No session: how to get a new link, and no link to pages it cannot open.
        assert "ask your account contact for a new portal link" in expired.text
        assert 'id="back-home"' not in expired.text
        unknown = await browser.get("/portal/login?token=nope")
        assert unknown.status_code == 401 and "not valid" in unknown.text
        assert "set-cookie" not in unknown.headers
        signed_out = await browser.get("/portal/customers/acme")
        assert signed_out.status_code == 401 and "Signed out" in signed_out.text


async def test_refusal_pages_lead_back_to_the_overview_of_a_live_session(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    link = await portal_link(client, admin, team)
    async with new_browser(app) as browser:
        assert (await browser.get(link)).status_code == 303
        home = '<a id="back-home" href="/portal/customers/acme">Back to your overview</a>'
        reused = await browser.get(link)  # the same link again, signed in
        assert reused.status_code == 410 and home in reused.text
        for path in ("/portal/nothing-here", "/portal/customers/globex"):
            missing = await browser.get(path)
            assert missing.status_code == 404 and home in missing.text, path
        forged = await browser.post("/portal/logout", data={"csrf": "0" * 64})
        assert forged.status_code == 403 and home in forged.text
    async with new_browser(app) as stranger:  # no session: a sentence, no link
        missing = await stranger.get("/portal/nothing-here")
        assert missing.status_code == 404 and 'id="back-home"' not in missing.text
        assert 'id="next-step">To sign in, ask your account contact' in missing.text
        reused = await stranger.get(link)
        assert reused.status_code == 410 and "for a new portal link" in reused.text


async def test_only_admin_or_finance_open_links(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    finance: dict[str, str],
    backend: dict[str, str],
    team: str,
) -> None:
    made = await client.post("/v1/customers/acme/portal-sessions", headers=finance)
    assert made.status_code == 201
    refused = await client.post("/v1/customers/acme/portal-sessions", headers=backend)
    assert refused.status_code == 403
    missing = await client.post("/v1/customers/nobody/portal-sessions", headers=admin)
    assert missing.status_code == 404


async def test_a_session_sees_its_own_customer_only(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex", plan="team")
    async with signed_in(app, client, admin, "acme") as browser:
        for path in ("/portal/customers/globex", "/portal/customers/globex/seats"):
            other = await browser.get(path)
            assert other.status_code == 404, path
            assert "globex" not in other.text
        home = await browser.get("/portal")
        assert home.headers["location"] == "/portal/customers/acme"


async def test_forged_csrf_is_refused_and_logout_ends_the_session(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    async with signed_in(app, client, admin, "acme") as browser:
        page = await browser.get("/portal/customers/acme")
        token = csrf_of(page.text)
        forged = await browser.post("/portal/logout", data={"csrf": "0" * len(token)})
        assert forged.status_code == 403 and "security token" in forged.text
        missing = await browser.post("/portal/logout", data={})
        assert missing.status_code == 403
        assert (await browser.get("/portal/customers/acme")).status_code == 200
        out = await browser.post("/portal/logout", data={"csrf": token})
        assert out.status_code == 200 and "signed out" in out.text.lower()
        # The cookie is gone from this browser, and the session from the server.
        assert (await browser.get("/portal/customers/acme")).status_code == 401


async def test_the_worker_purges_what_can_no_longer_be_used(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    from sqlalchemy import func, select

    from allotment.portal.models import PortalSession
    from allotment.worker import run_once

    async with signed_in(app, client, admin, "acme"):  # a live session, its link spent
        pass
    async with signed_in(app, client, admin, "acme") as browser:  # signed out
        page = await browser.get("/portal/customers/acme")
        await browser.post("/portal/logout", data={"csrf": csrf_of(page.text)})
    await portal_link(client, admin, team)  # never opened
    later = utcnow() + timedelta(hours=2)  # past the links' hour, within the session's 12
    done = await run_once(app.state.sessionmaker, now=later)
    assert done["portal_rows_purged"] == 3  # the ended session, its link, the unused link
    async with session_scope(app.state.sessionmaker) as session:
        links = (await session.execute(select(func.count()).select_from(PortalLink))).scalar()
        live = (await session.execute(select(func.count()).select_from(PortalSession))).scalar()
    assert (links, live) == (1, 1)
