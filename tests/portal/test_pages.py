"""Every portal page, read as a customer: its numbers are the API's, and a seat is released
through the page's form."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import text

from allotment.billing import service as billing
from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.portal import views
from tests.factories.portal import csrf_of, portal_link, signed_in
from tests.factories.usage import event, ingest_at, send

NOW = datetime(2026, 12, 3, 14, 5, tzinfo=UTC)


def text_of(html: str, element_id: str) -> str:
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*>([^<]*)<', html)
    assert found is not None, f"no #{element_id} in the page"
    return found.group(1).strip()


def attribute(html: str, element_id: str, name: str) -> str:
    found = re.search(rf'id="{re.escape(element_id)}"[^>]*?{name}="([^"]*)"', html)
    assert found is not None, f"no #{element_id}[{name}] in the page"
    return found.group(1)


async def seed(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for subject in ("ada", "grace", "linus"):
        made = await client.post(
            "/v1/customers/acme/seats", json={"subject": subject}, headers=admin
        )
        assert made.status_code == 201, made.text
    for n, kind in enumerate(("vm", "container")):
        made = await client.post(
            "/v1/customers/acme/instances",
            json={"fingerprint": f"host-{n}", "kind": kind, "environment": "production"},
            headers=admin,
        )
        assert made.status_code == 201, made.text
    calls = [event(f"e{n}", data={"count": n + 1}) for n in range(12)]
    calls += [event(f"x{n}", type="export.created", data={}) for n in range(3)]
    sent = await send(client, admin, calls)
    assert sent.json()["accepted"] == 15, sent.text


async def test_every_page_shows_the_apis_numbers(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    await seed(client, admin)
    api = (await client.get("/v1/customers/acme/entitlements", headers=admin)).json()
    async with signed_in(app, client, admin, "acme") as browser:
        base = "/portal/customers/acme"
        overview = (await browser.get(base)).text
        assert text_of(overview, "contract-plan") == "team"
        assert text_of(overview, "overview-seats") == f"{api['limits']['seats']['held']} of 10"

        page = (await browser.get(f"{base}/usage")).text
        for meter in ("api_calls", "exports"):
            read = await client.get(f"/v1/customers/acme/usage?meter={meter}", headers=admin)
            total = read.json()["total"]
            assert attribute(page, f"usage-total-{meter}", "data-value") == str(total)
        assert text_of(page, "usage-total-api_calls") == "78"  # 1 + 2 + … + 12
        assert '<title id="chart-api_calls-title">' in page and "<desc" in page
        assert 'id="usage-table-api_calls"' in page

        page = (await browser.get(f"{base}/seats")).text
        held = (await client.get("/v1/customers/acme/seats", headers=admin)).json()["items"]
        assert text_of(page, "seats-held") == str(api["limits"]["seats"]["held"]) == "3"
        assert text_of(page, "seats-limit") == "10"
        for seat in held:
            assert f'<option value="{seat["subject"]}">' in page
        assert '<label for="release-subject">' in page

        page = (await browser.get(f"{base}/instances")).text
        assert text_of(page, "instances-held") == str(api["limits"]["instances"]["held"]) == "2"
        assert 'id="instances-vm"' in page and 'id="instances-container"' in page

        page = (await browser.get(f"{base}/invoice")).text
        as_of = attribute(page, "invoice-lines", "data-as-of")
        contract = api["contract"]["id"]
        preview = await client.get(
            f"/v1/contracts/{contract}/invoice-preview?period={as_of[:7]}&as_of={quote(as_of)}",
            headers=admin,
        )
        assert text_of(page, "invoice-subtotal") == str(preview.json()["subtotal"])
        # Each line's source in words, not a dump of its JSON (the CSV keeps that).
        sources = re.findall(r'<small class="source">([^<]*)</small>', page)
        assert len(sources) == len(preview.json()["lines"])
        assert not any("{" in shown or "revisions:" in shown for shown in sources), sources
        assert any(shown.startswith("meter api_calls, 12 events, total 78") for shown in sources)
        assert len(re.findall(r"<tr><th scope=\"row\">", page)) == len(preview.json()["lines"])
        # Made in this hour, after it began: taken now, not an empty hour's 0.00.
        assert preview.json()["lines"] and "taken now" in text_of(page, "invoice-as-of")
        csv = await browser.get(f"{base}/invoice.csv")
        assert csv.headers["content-type"].startswith("text/csv")
        assert "attachment" in csv.headers["content-disposition"]
        assert csv.text.splitlines()[0] == "code,description,quantity,unit,unit_price,amount,source"
        assert len(csv.text.splitlines()) == len(preview.json()["lines"]) + 1

        page = (await browser.get(f"{base}/entitlements")).text
        for feature in api["features"]:
            row = re.search(rf'id="feature-{feature["feature"]}".*?</tr>', page, re.S)
            assert row is not None, feature
            shown = "true" if feature["allowed"] else "false"
            assert f'data-allowed="{shown}"' in row.group(0), feature
            assert f'data-reason="{feature["reason"]}"' in row.group(0), feature
        # What would unlock a feature not in the plan: sso needs the enterprise plan; the audit
        # log comes with it, or with the audit_pack add-on.
        sso = re.search(r'id="feature-sso".*?</tr>', page, re.S)
        assert sso is not None and "Plan: enterprise</td>" in sso.group(0)
        audit = re.search(r'id="feature-audit_log".*?</tr>', page, re.S)
        assert audit is not None
        assert "Plan: enterprise" in audit.group(0) and "Add-on: audit_pack" in audit.group(0)
        # What a feature needs, and whether each is met: sso needs the audit log, not held.
        needs = re.search(r'id="needs-sso">(.*?)</small>', page, re.S)
        assert needs is not None and needs.group(1).startswith("Needs: audit_log (")
        assert 'data-met="false">you do not have it<' in needs.group(1)

        page = (await browser.get(f"{base}/graph")).text
        assert re.search(r'class="node plan held" id="node-plan-team"', page)
        assert '<title id="graph-title">' in page and 'id="graph-grants"' in page


async def test_a_seat_is_released_through_the_form(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    for subject in ("ada", "grace"):
        await client.post("/v1/customers/acme/seats", json={"subject": subject}, headers=admin)
    async with signed_in(app, client, admin, "acme") as browser:
        page = await browser.get("/portal/customers/acme/seats")
        token = csrf_of(page.text)
        forged = await browser.post(
            "/portal/customers/acme/seats/release", data={"subject": "ada", "csrf": "f" * 64}
        )
        assert forged.status_code == 403
        done = await browser.post(
            "/portal/customers/acme/seats/release", data={"subject": "ada", "csrf": token}
        )
        assert done.status_code == 303
        after = await browser.get(done.headers["location"])
        assert "Released the seat of ada" in after.text
        assert text_of(after.text, "seats-held") == "1"
    held = (await client.get("/v1/customers/acme/seats", headers=admin)).json()["items"]
    assert [seat["subject"] for seat in held] == ["grace"]
    ada = app.state.pseudonyms.of("acme", "ada")  # the audit trail names subjects by pseudonym
    audit = (await client.get(f"/v1/audit?target=acme/{ada}", headers=admin)).json()
    assert any(r["actor"].startswith("portal:ps_") for r in audit.get("items", [])), audit


async def test_the_seats_page_shows_an_open_burst_window(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    # team: 10 seats, 2 more for 72 h once they are full.
    for n in range(11):
        made = await client.post(
            "/v1/customers/acme/seats", json={"subject": f"u{n}"}, headers=admin
        )
        assert made.status_code == 201, made.text
    window = made.json()["burst"]
    async with signed_in(app, client, admin, "acme") as browser:
        page = (await browser.get("/portal/customers/acme/seats")).text
        assert text_of(page, "seats-held") == "11"
        shown = text_of(page, "burst-window")
        assert "1 extra seat left" in shown and window["extra_left"] == 1
        assert window["ends_at"][:16].replace("T", " ") in shown


async def test_a_trial_counts_down_its_days_and_the_overview_shows_the_month_so_far(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from tests.factories.contracts import create_contract, days_from_now
    from tests.factories.customers import create_customer
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    await publish_policy(client, admin, demo_document())
    await create_customer(client, admin, key="initech")
    contract = await create_contract(
        client, admin, customer="initech", kind="trial", ends_at=days_from_now(9.75)
    )
    async with signed_in(app, client, admin, "initech") as browser:
        page = (await browser.get("/portal/customers/initech")).text
        # 9 days 18 hours: 10 days, to the nearest
        assert "Trial ends on" in page and text_of(page, "days-left") == "10"
        assert text_of(page, "contract-kind") == "trial"
        subtotal = text_of(page, "invoice-subtotal").split()[0]
        as_of = attribute(page, "invoice-subtotal", "data-as-of")
        preview = await client.get(
            f"/v1/contracts/{contract['id']}/invoice-preview",
            params={"period": as_of[:7], "as_of": as_of},
            headers=admin,
        )
        assert subtotal == str(preview.json()["subtotal"])


async def test_under_a_day_the_countdown_says_hours_not_a_day(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from tests.factories.contracts import create_contract, days_from_now
    from tests.factories.customers import create_customer
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    await publish_policy(client, admin, demo_document())
    for key, days in (("initech", 3.5 / 24), ("hooli", 40 / 1440)):
        await create_customer(client, admin, key=key)
        await create_contract(
            client, admin, customer=key, kind="trial", ends_at=days_from_now(days)
        )
    async with signed_in(app, client, admin, "initech") as browser:
        page = (await browser.get("/portal/customers/initech")).text
    assert text_of(page, "time-left") == "3 hours" and "day left" not in page
    assert 'id="days-left"' not in page
    async with signed_in(app, client, admin, "hooli") as browser:
        page = (await browser.get("/portal/customers/hooli")).text
    assert text_of(page, "time-left") in ("39 minutes", "40 minutes")
    assert views.countdown({"kind": "trial", "ends_at": "2026-12-03T16:00:00Z"}, NOW)["left"] == (
        "1 hour 55 minutes"
    )


async def test_the_cookie_is_secure_over_https(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    from tests.factories.portal import portal_link

    link = await portal_link(client, admin, team)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as browser:
        opened = await browser.get(link)
        assert opened.status_code == 303
        assert "secure" in opened.headers["set-cookie"].lower()


async def test_release_notes_show_the_policy_changes_that_touched_the_customer(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    from tests.factories.contracts import create_contract
    from tests.factories.customers import create_customer
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    await create_customer(client, admin, key="globex")
    await create_contract(client, admin, customer="globex", plan="starter")
    document = demo_document()
    document["plans"]["team"]["features"].append("audit_log")  # team gains the audit log
    document["plans"]["team"]["limits"]["api_calls"]["limit"] = 50_000
    await publish_policy(client, admin, document)
    async with signed_in(app, client, admin, "acme") as browser:
        page = (await browser.get("/portal/customers/acme/releases")).text
        assert "Version 2: published" in page
        assert re.search(r"You gained: <span[^>]*>audit_log</span>", page)
        # The limit in words, not its path (which stays in the notes' JSON).
        assert re.search(
            r'<span data-path="meters.api_calls.limit">api_calls limit on team</span>: '
            r"100,000 → 50,000",
            page,
        ), page
        assert ">meters.api_calls.limit<" not in page and ">Limit meters." not in page
        entitlements = (await browser.get("/portal/customers/acme/entitlements")).text
        needs = re.search(r'id="needs-sso">(.*?)</small>', entitlements, re.S)
        assert needs is not None and 'data-met="true">you have it<' in needs.group(1)
    async with signed_in(app, client, admin, "globex") as browser:
        page = (await browser.get("/portal/customers/globex/releases")).text
        assert 'id="releases-none"' in page and "Version 2" not in page


async def test_the_usage_page_reads_every_meter_as_the_api_reads_each(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from tests.factories.contracts import create_contract
    from tests.factories.customers import create_customer
    from tests.factories.policies_for_contracts import publish_policy
    from tests.factories.usage import metered_document

    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    events = [event(f"c{n}", data={"count": n}) for n in range(1, 5)]
    events += [event(f"l{n}", type="app.login", data={"user": f"u{n % 3}"}) for n in range(7)]
    events += [event(f"j{n}", type="jobs.running", data={"n": n * 3 % 7}) for n in range(5)]
    events += [event(f"s{n}", type="storage.used", data={"gb": 2}) for n in range(3)]
    assert (await send(client, admin, events)).json()["accepted"] == len(events)
    async with signed_in(app, client, admin, "acme") as browser:
        page = (await browser.get("/portal/customers/acme/usage")).text
    totals = {}
    for meter in ("api_calls", "exports", "logins", "peak_jobs", "storage"):
        read = await client.get(f"/v1/customers/acme/usage?meter={meter}", headers=admin)
        totals[meter] = attribute(page, f"usage-total-{meter}", "data-value")
        assert totals[meter] == str(read.json()["total"]), meter
    assert (totals["api_calls"], totals["logins"], totals["peak_jobs"]) == ("10", "3", "6")


async def test_bad_release_forms_wrong_methods_and_forged_notices_get_pages(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    await client.post("/v1/customers/acme/seats", json={"subject": "ada"}, headers=admin)
    base = "/portal/customers/acme"
    async with signed_in(app, client, admin, "acme") as browser:
        token = csrf_of((await browser.get(f"{base}/seats")).text)
        for subject in ("a\x00b", "x" * 257):
            refused = await browser.post(
                f"{base}/seats/release", data={"subject": subject, "csrf": token}
            )
            assert refused.status_code == 422, subject[:8]
            assert refused.headers["content-type"].startswith("text/html")
            assert "256 characters" in refused.text

        spoof = "nobody - your account is suspended"
        page = await browser.get(f"{base}/seats", params={"released": spoof})
        assert page.status_code == 200 and "suspended" not in page.text
        forged = await browser.get(f"{base}/seats", params={"released": spoof, "notice": "1.ab"})
        assert "suspended" not in forged.text
        done = await browser.post(f"{base}/seats/release", data={"subject": "ada", "csrf": token})
        after = await browser.get(done.headers["location"])
        assert "Released the seat of ada" in after.text

        for method in ("PUT", "DELETE", "PATCH"):
            wrong = await browser.request(method, base)
            assert wrong.status_code == 405, method
            assert wrong.headers["content-type"].startswith("text/html")
            assert wrong.headers["allow"] == "GET, HEAD"
        wrong = await browser.request("DELETE", f"{base}/seats/release")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        # GET and POST swapped are 405 pages too, as is any method on /portal but GET.
        for method, path, allow in (
            ("GET", f"{base}/seats/release", "POST"),
            ("POST", base, "GET, HEAD"),
            ("POST", f"{base}/invoice.csv", "GET, HEAD"),
            ("GET", "/portal/logout", "POST"),
            ("POST", "/portal", "GET, HEAD"),
            ("PUT", "/portal", "GET, HEAD"),
        ):
            wrong = await browser.request(method, path)
            assert wrong.status_code == 405, (method, path, wrong.text[:200])
            assert wrong.headers["content-type"].startswith("text/html"), (method, path)
            assert wrong.headers["allow"] == allow, (method, path)
        assert (await browser.get(f"{base}/no-such-page")).status_code == 404
        slash = await browser.get("/portal/")
        assert slash.status_code == 303 and slash.headers["location"] == "/portal"
        head = await browser.head(f"{base}/seats")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"].startswith("text/html")
    link = await portal_link(client, admin, "acme")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as b:
        head = await b.head(link)  # HEAD spends no link
        assert head.status_code == 405 and head.headers["allow"] == "GET"
        assert (await b.get(link)).status_code == 303


async def test_limits_reached_are_said_in_words_and_floating_seats_list_their_sessions(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from tests.factories.contracts import create_contract
    from tests.factories.customers import create_customer
    from tests.factories.policies_for_contracts import demo_document, publish_policy

    document = demo_document()
    document["plans"]["team"]["limits"]["api_calls"]["limit"] = 5
    document["plans"]["team"]["limits"]["exports"]["limit"] = 2
    await publish_policy(client, admin, document)
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team")
    calls = [event(f"c{n}", data={"count": 3}) for n in range(2)]
    calls += [event(f"x{n}", type="export.created", data={}) for n in range(3)]
    assert (await send(client, admin, calls)).json()["accepted"] == 5
    check = await client.post(
        "/v1/check", json={"customer": "acme", "feature": "api"}, headers=admin
    )
    assert check.json()["reason"] == "usage_limit_reached", check.text
    async with signed_in(app, client, admin, "acme") as browser:
        page = (await browser.get("/portal/customers/acme/entitlements")).text
        usage_page = (await browser.get("/portal/customers/acme/usage")).text
    assert attribute(page, "limit-api", "data-limit") == "limit_reached"
    assert text_of(page, "limit-api").startswith("Limit reached")
    # Refused as the check refuses it: not allowed, with the check's reason.
    row = re.search(r'id="feature-api">.*?</tr>', page, re.S)
    assert row is not None
    assert re.search(r'<td class="denied" data-allowed="false">Limit reached<', row.group(0))
    assert 'data-reason="usage_limit_reached"' in row.group(0)
    api = (await client.get("/v1/customers/acme/entitlements", headers=admin)).json()
    allowed = sum(1 for f in api["features"] if f["allowed"])
    assert not next(f for f in api["features"] if f["feature"] == "api")["allowed"]
    async with signed_in(app, client, admin, "acme") as browser:
        overview = (await browser.get("/portal/customers/acme")).text
    assert text_of(overview, "features-allowed") == f"{allowed} of {len(api['features'])}"
    assert attribute(page, "limit-exports", "data-limit") == "over_soft_limit"
    assert attribute(usage_page, "usage-state-api_calls", "data-limit") == "limit_reached"
    assert text_of(usage_page, "usage-state-exports").startswith("Over the soft limit")
    assert "approaching_limit" not in usage_page and "soft_limit_exceeded" not in usage_page

    # A concurrent (floating) pool holds sessions, not seats: the page lists them.
    await create_customer(client, admin, key="umbrella")
    await create_contract(client, admin, customer="umbrella", plan="floating")
    for subject in ("u1", "u1", "u2"):
        opened = await client.post(
            "/v1/customers/umbrella/sessions", json={"subject": subject}, headers=admin
        )
        assert opened.status_code == 201, opened.text
    async with signed_in(app, client, admin, "umbrella") as browser:
        page = (await browser.get("/portal/customers/umbrella/seats")).text
    assert text_of(page, "seats-held") == "3"
    rows = re.findall(r'<td class="subject">([^<]*)</td>', page)
    assert sorted(rows) == ["u1", "u1", "u2"]
    assert "No seats are held" not in page


async def test_a_contract_recorded_earlier_in_the_same_second_is_priced(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    """The first hour's fallback takes the preview at the page's instant itself: taken at now
    to the second, a contract recorded earlier in that second would price as nothing."""
    api = (await client.get("/v1/customers/acme/entitlements", headers=admin)).json()
    async with session_scope(app.state.sessionmaker) as session:
        recorded = (
            await session.execute(
                text("SELECT min(created_at) FROM contract_revisions WHERE contract_id = :c"),
                {"c": api["contract"]["id"]},
            )
        ).scalar_one()
        # Within the second the contract was recorded in, just after it.
        now = recorded + timedelta(microseconds=1)
        if now.second != recorded.second:
            now = recorded
        found = await views.invoice(session, api, now)
    assert found is not None and found.lines, "the first hour's preview priced nothing"
    assert found.as_of == now


async def test_the_invoice_reports_as_late_only_use_from_before_its_instant(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], team: str
) -> None:
    """Taken on the hour, the invoice's late events are those from before the hour that
    arrived after it, not the use since (which is not late; the next hour takes it in)."""
    api = (await client.get("/v1/customers/acme/entitlements", headers=admin)).json()
    now = views.last_hour(utcnow()) + timedelta(hours=3, minutes=30)  # the page's instant
    hour = views.last_hour(now)
    arrived = hour + timedelta(minutes=10)
    sent = [
        event("on-time", time=hour - timedelta(hours=2), data={"count": 5}),
        event("late", time=hour - timedelta(minutes=30), data={"count": 7}),
        event("since", time=hour + timedelta(minutes=5), data={"count": 11}),
    ]
    await ingest_at(app, sent[:1], received=hour - timedelta(hours=2))
    await ingest_at(app, sent[1:], received=arrived)
    async with session_scope(app.state.sessionmaker) as session:
        found = await views.invoice(session, api, now)
        everything = await billing.preview(
            session,
            contract_id=api["contract"]["id"],
            period=views.period_of(now),
            now=now,
            as_of=hour,
        )
    assert found is not None and found.as_of == hour
    assert found.late.events == 1 and found.late.meters[0].units == 7
    assert everything.late.events == 2  # the API's preview reports the use since, too
    assert found.lines == everything.lines
    # Taken on the hour, it is kept for a minute (its lines never change; its late events
    # may): the pages opened one after another price it once.
    more = [event("later", time=hour - timedelta(minutes=20), data={"count": 3})]
    await ingest_at(app, more, received=arrived + timedelta(seconds=5))
    async with session_scope(app.state.sessionmaker) as session:
        again = await views.invoice(session, api, now + timedelta(seconds=30))
        fresh = await views.invoice(session, api, now + views.TAKEN_FOR)
    assert again is found
    assert fresh is not None and fresh is not found and fresh.late.events == 2
    assert fresh.lines == found.lines
