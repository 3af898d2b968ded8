"""Edges a new user hit (each failed before its fix): timestamps at the ends of the calendar,
half-hour offsets, what `late` counts, a scheduled amendment that changes nothing priced,
the finance list at a fixed instant and its paging, the CSV's instant, quantities too large
to be exact, and an unknown tenant on a usage read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from allotment.kit.clock import isoformat
from tests.billing.test_boundaries import OCTOBER, _preview, _sql, tokens, tokens_policy
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import BATCH, ingest_at


async def _acme(client: httpx.AsyncClient, admin: dict[str, str], **contract: Any) -> str:
    await publish_policy(client, admin, tokens_policy())
    await create_customer(client, admin, key="acme")
    return str((await create_contract(client, admin, plan="team", **contract))["id"])


async def test_a_time_out_of_range_in_utc_is_refused_by_index_not_a_500(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    await _acme(client, admin)
    now = iso(datetime.now(UTC) - timedelta(minutes=1))
    good = {"specversion": "1.0", "id": "ok", "source": "gw", "type": "llm.tokens"}
    good |= {"subject": "acme", "time": now, "data": {"tokens": 1}}
    bad = {**good, "id": "edge", "time": "9999-12-31T23:59:59-23:59"}
    sent = await client.post(
        "/v1/events", json=[good, bad], headers={**backend, "Content-Type": BATCH}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == 1
    assert [r["index"] for r in sent.json()["rejected"]] == [1]
    early = await client.post(
        "/v1/events",
        json={**good, "id": "early", "time": "0001-01-01T00:00:00+01:00"},
        headers=backend,
    )
    assert early.status_code == 422 and early.json()["errors"][0]["path"] == "time"


async def test_instants_at_the_ends_of_the_calendar_are_422s_or_answers(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    contract = await _acme(client, admin, starts_at=iso(datetime(2026, 10, 1, tzinfo=UTC)))
    url = f"/v1/contracts/{contract}/invoice-preview"
    for period, as_of in (
        ("2026-10", "9999-12-31T23:59:59-23:59"),
        ("2026-10", "0001-01-01T00:30:00+01:00"),
    ):
        refused = await client.get(url, params={"period": period, "as_of": as_of}, headers=finance)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["path"] == "query.as_of"
    for start, end, granularity in (
        ("2026-10-01T00:00:00Z", "9999-12-31T00:00:00Z", "month"),
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "day"),
    ):
        usage = await client.get(
            "/v1/customers/acme/usage",
            params={"meter": "tokens", "from": start, "to": end, "granularity": granularity},
            headers=finance,
        )
        assert usage.status_code == 200, usage.text


async def test_hourly_buckets_are_utc_hours_whatever_the_offset(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await _acme(client, admin, starts_at=iso(datetime(2026, 10, 1, tzinfo=UTC)))
    at = datetime(2026, 10, 2, 21, 10, tzinfo=UTC)
    await ingest_at(app, [tokens("t", at, 500)], received=at + timedelta(minutes=1))
    usage = await client.get(
        "/v1/customers/acme/usage",
        params={
            "meter": "tokens",
            "from": "2026-10-03T02:00:00+05:30",  # 20:30Z
            "to": "2026-10-03T03:30:00+05:30",  # 22:00Z
            "granularity": "hour",
        },
        headers=finance,
    )
    read = usage.json()
    assert read["total"] == "500"
    assert [(b["start"][:19], b["value"]) for b in read["buckets"]] == [
        ("2026-10-02T21:00:00", "500")
    ]


async def test_late_counts_the_metered_events_of_the_active_time_only(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    start = datetime(2026, 10, 14, 19, 53, 17, tzinfo=UTC)
    end = datetime(2026, 10, 20, tzinfo=UTC)
    contract = await _acme(client, admin, starts_at=iso(start), ends_at=iso(end))
    await _sql(
        app, "UPDATE contract_revisions SET created_at = :t", t=datetime(2026, 9, 1, tzinfo=UTC)
    )
    await _sql(app, "UPDATE policy_activations SET at = :t", t=datetime(2026, 9, 1, tzinfo=UTC))
    as_of = datetime(2026, 11, 1, tzinfo=UTC)
    late = [
        tokens("before-start", start - timedelta(minutes=53), 40_000),
        tokens("inside", start + timedelta(minutes=7), 500),
        tokens("at-the-end", end, 3_000_000),
        {**tokens("unmetered", start + timedelta(hours=2), 1), "type": "other.thing"},
    ]
    await ingest_at(app, late, received=as_of + timedelta(hours=1))
    invoice = await _preview(client, finance, contract, OCTOBER, as_of=iso(as_of))
    assert invoice["late"] == {
        "events": 1,
        "meters": [{"meter": "tokens", "events": 1, "units": "500"}],
    }


async def test_a_scheduled_amendment_that_changes_nothing_priced_keeps_the_months_fees(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (first + timedelta(days=32)).replace(day=1)
    contract = await _acme(client, admin, starts_at=iso(first))
    later = min(now + timedelta(days=3), following - timedelta(hours=1))
    if later <= now:
        return  # the month ends within the hour
    current = (await client.get(f"/v1/contracts/{contract}", headers=admin)).json()
    patched = await client.patch(
        f"/v1/contracts/{contract}",
        json={
            "overrides": [{"feature": "chat", "action": "grant", "reason": "promo"}],
            "effective_at": iso(later),
        },
        headers={**admin, "If-Match": str(current["revision"])},
    )
    assert patched.status_code == 200, patched.text
    invoice = await _preview(client, finance, contract, now.strftime("%Y-%m"))
    base = next(line for line in invoice["lines"] if line["code"] == "base")
    assert base["amount"] == "310.00"  # the whole month's fee, the override changes no price


async def test_the_finance_list_is_one_instants_and_its_pages_keep_it(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, tokens_policy())
    ids = []
    for key in ("acme", "globex", "initech"):
        await create_customer(client, admin, key=key)
        made = await create_contract(
            client, admin, customer=key, plan="team", starts_at="2026-10-01T00:00:00Z"
        )
        ids.append(made["id"])
    recorded = datetime(2026, 10, 5, tzinfo=UTC)
    await _sql(
        app, "UPDATE contracts SET created_at = :t WHERE id <> :late", t=recorded, late=ids[2]
    )
    await _sql(app, "UPDATE contract_revisions SET created_at = :t", t=recorded)
    await _sql(app, "UPDATE policy_activations SET at = :t", t=datetime(2026, 9, 1, tzinfo=UTC))
    as_of = iso(datetime(2026, 11, 2, tzinfo=UTC))
    page = await client.get(
        "/v1/invoice-preview",
        params={"period": OCTOBER, "as_of": as_of, "limit": 1},
        headers={**finance, "Accept": "text/csv"},
    )
    assert page.status_code == 200, page.text
    assert page.headers["allotment-as-of"] == isoformat(datetime(2026, 11, 2, tzinfo=UTC))
    link = page.headers["link"]
    assert "as_of=2026-11-02" in link and "limit=1" in link and 'rel="next"' in link
    listed = await client.get(
        "/v1/invoice-preview", params={"period": OCTOBER, "as_of": as_of}, headers=finance
    )
    assert sorted(i["contract"] for i in listed.json()["items"]) == sorted(ids[:2])


async def test_a_quantity_too_large_to_be_exact_is_refused(
    client: httpx.AsyncClient, admin: dict[str, str], backend: dict[str, str]
) -> None:
    await _acme(client, admin)
    event = tokens("huge", datetime.now(UTC) - timedelta(minutes=1), 10**15 + 1)
    refused = await client.post("/v1/events", json=event, headers=backend)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["path"] == "data.tokens"
    fine = await client.post(
        "/v1/events", json={**event, "id": "largest", "data": {"tokens": 10**15}}, headers=backend
    )
    assert fine.status_code == 200 and fine.json()["accepted"] == 1


async def test_a_usage_read_for_an_unknown_tenant_is_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await _acme(client, admin)
    refused = await client.get(
        "/v1/customers/acme/usage", params={"meter": "tokens", "tenant": "zzz"}, headers=finance
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["path"] == "query.tenant"
