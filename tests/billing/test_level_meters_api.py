"""Richer meters end to end, on real PostgreSQL (docs/usage.md "Levels", "Filters and
multipliers"; docs/billing.md "Levels"): events in, usage out, invoice lines worked by hand.

    storage_gb   average of a gauge (GB), included "0.5", 0.10 per GB-month
    hosts        p95 of the hourly greatest host count, 15 per host-month
    windows_kb   sum of `bytes` × 0.001 over the events where data.os == 'windows', 0.02 per KB
    all_kb       the same events unfiltered (a second meter on the type still counts them)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

import httpx

from allotment.kit.clock import isoformat, utcnow
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, error_paths, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import check
from tests.factories.usage import event, ingest_at, metered_document, send

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DEC = datetime(2026, 12, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def levels_document() -> dict[str, Any]:
    document = metered_document()
    document["meters"].update(
        {
            "storage_gb": {
                "event_type": "storage.gauge",
                "aggregation": "average",
                "property": "gb",
            },
            "hosts": {
                "event_type": "hosts.seen",
                "aggregation": "max",
                "property": "n",
                "percentile": 95,
            },
            "windows_kb": {
                "event_type": "transfer",
                "aggregation": "sum",
                "property": "bytes",
                "filter": "data.os == 'windows'",
                "multiplier": "0.001",
            },
            "all_kb": {
                "event_type": "transfer",
                "aggregation": "sum",
                "property": "bytes",
                "multiplier": "0.001",
            },
        }
    )
    document["features"]["transfers"] = {"meter": "windows_kb"}
    team = document["plans"]["team"]
    team["features"].append("transfers")
    team["price"]["meters"].update(
        {
            "storage_gb": {"included": "0.5", "tiers": [{"unit": "0.10"}]},
            "hosts": {"tiers": [{"unit": "15"}]},
            "windows_kb": {"tiers": [{"unit": "0.02"}]},
        }
    )
    return document


def transfers(prefix: str, time: datetime) -> list[dict[str, Any]]:
    return [
        event(f"{prefix}1", type="transfer", time=time, data={"bytes": 1500, "os": "windows"}),
        event(f"{prefix}2", type="transfer", time=time, data={"bytes": 2500, "os": "linux"}),
        event(f"{prefix}3", type="transfer", time=time, data={"bytes": 1000, "os": "windows"}),
    ]


async def usage(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    meter: str,
    start: datetime,
    end: datetime,
    granularity: str = "month",
) -> dict[str, Any]:
    response = await client.get(
        "/v1/customers/acme/usage",
        params={
            "meter": meter,
            "from": isoformat(start),
            "to": isoformat(end),
            "granularity": granularity,
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_events_in_usage_out(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, levels_document())
    await create_customer(client, admin, key="acme")
    await create_contract(
        client,
        admin,
        customer="acme",
        plan="team",
        overrides=[{"meter": "windows_kb", "limit": 3, "reason": "test"}],
    )
    backend = await create_key(app, scopes=["check"])
    t0 = utcnow().replace(minute=0, second=0, microsecond=0) - 4 * HOUR
    batch = [
        event("g1", type="storage.gauge", time=t0, data={"gb": 10}),
        event("g2", type="storage.gauge", time=t0 + 2 * HOUR, data={"gb": 40}),
        event("h1", type="hosts.seen", time=t0, data={"n": 3}),
        event("h2", type="hosts.seen", time=t0 + HOUR, data={"n": 10}),
        event("h3", type="hosts.seen", time=t0 + 2 * HOUR, data={"n": 3}),
        *transfers("t", t0 + timedelta(minutes=10)),
    ]
    sent = (await send(client, backend, batch)).json()
    assert sent["accepted"] == 8 and sent["rejected"] == [] and sent["unmetered"] == []

    async def figures() -> dict[str, Any]:
        return {
            "storage": await usage(client, admin, "storage_gb", t0, t0 + 3 * HOUR, "hour"),
            "hosts_4h": await usage(client, admin, "hosts", t0, t0 + 4 * HOUR),
            "hosts_20h": await usage(client, admin, "hosts", t0 - 16 * HOUR, t0 + 4 * HOUR),
            "windows": await usage(client, admin, "windows_kb", t0, t0 + 4 * HOUR),
            "all": await usage(client, admin, "all_kb", t0, t0 + 4 * HOUR),
        }

    first = await figures()
    storage = first["storage"]
    # 10 GB for two hours, then 40 GB for one: (10·2 + 40·1) / 3 = 20, hour by hour 10, 10, 40.
    assert storage["aggregation"] == "average" and Decimal(storage["total"]) == 20
    assert [(b["value"], b["events"]) for b in storage["buckets"]] == [
        ("10", 1),
        ("10", 0),  # no reading in this hour: the last one holds
        ("40", 1),
    ]
    # Hours 3, 10, 3 and one without data: p95 of 4 is the 4th, the greatest (10); of 20
    # hours (16 without data) it is the 19th sorted, so the top hour drops: 3.
    assert first["hosts_4h"]["percentile"] == "95" and Decimal(first["hosts_4h"]["total"]) == 10
    assert Decimal(first["hosts_20h"]["total"]) == 3
    # Only the Windows transfers, in KB: 1.5 + 1.0; the unfiltered meter counts all three.
    assert Decimal(first["windows"]["total"]) == Decimal("2.5")
    assert first["windows"]["buckets"][0]["events"] == 2
    assert Decimal(first["all"]["total"]) == 5 and first["all"]["buckets"][0]["events"] == 3

    # A limit on a filtered, scaled meter: 2.5 KB of 3 used, past 80 %.
    checked = await check(client, backend, "transfers")
    assert checked["allowed"] is True and checked["warnings"] == ["approaching_limit"]
    assert checked["limit"]["used"] == 2.5 and checked["limit"]["remaining"] == 0.5
    consumed = await client.post(
        "/v1/check",
        json={"customer": "acme", "feature": "transfers", "consume": 1},
        headers=backend,
    )
    assert consumed.status_code == 422 and "filter or a multiplier" in consumed.text

    # Exactly once: the same batch again changes nothing.
    again = (await send(client, backend, batch)).json()
    assert again["accepted"] == 0 and again["duplicates"] == 8
    assert await figures() == first


async def test_a_level_meter_takes_no_contract_limit_nor_tenant_quota(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await publish_policy(client, admin, levels_document())
    await create_customer(client, admin, key="acme")
    refused = await create_contract(
        client,
        admin,
        customer="acme",
        plan="team",
        overrides=[{"meter": "storage_gb", "limit": 3, "reason": "test"}],
        expect=422,
    )
    assert error_paths(refused) == ["overrides[0].meter"]
    assert "is a level" in str(refused)
    await create_contract(client, admin, customer="acme", plan="team")
    quota = await client.post(
        "/v1/customers/acme/tenants",
        json={"key": "eu", "quotas": {"meters": {"hosts": 5}}},
        headers=admin,
    )
    assert quota.status_code == 422, quota.text
    assert error_paths(quota) == ["quotas.meters.hosts"]
    assert "is a level" in quota.json()["errors"][0]["message"]


async def test_a_month_of_levels_priced(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, levels_document())
    await create_customer(client, admin, key="acme")
    contract = await create_contract(
        client, admin, customer="acme", plan="team", starts_at=iso(NOV)
    )
    # Storage: 10 GB read on Oct 25 and carried into November, 40 GB from Nov 11, 10 GB
    # from Nov 21: (10·10 + 40·10 + 10·10) / 30 = 20 GB on average.
    gauge = [
        event("g0", type="storage.gauge", time=NOV - 7 * DAY, data={"gb": 10}),
        event("g1", type="storage.gauge", time=NOV + 10 * DAY, data={"gb": 40}),
        event("g2", type="storage.gauge", time=NOV + 20 * DAY, data={"gb": 10}),
    ]
    # Hosts: 3 for hours 0-659, 10 for hours 660-689, nothing for the last 30 hours.
    hosts = [
        event(f"h{h}", type="hosts.seen", time=NOV + h * HOUR, data={"n": 3 if h < 660 else 10})
        for h in range(690)
    ]
    await ingest_at(app, [*gauge, *hosts, *transfers("t", NOV + 2 * DAY)], received=DEC)

    async def preview(**params: str) -> dict[str, Any]:
        response = await client.get(
            f"/v1/contracts/{contract['id']}/invoice-preview",
            params={"period": "2026-11", **params},
            headers=finance,
        )
        assert response.status_code == 200, response.text
        return {line["code"]: line for line in response.json()["lines"]}

    lines = await preview()
    storage = lines["meter:storage_gb"]
    # (20 − 0.5 included) × 0.10 × the whole month = 1.95
    assert Decimal(storage["quantity"]) == Decimal("19.5")
    assert Decimal(storage["amount"]) == Decimal("1.95")
    assert storage["source"]["total"] == "20" and storage["source"]["included"] == "0.5"
    assert storage["source"]["level"] is True and storage["source"]["fraction"] == "1"
    assert storage["source"]["events"] == 2  # the readings inside November
    # 720 hours: 30 at 0, 660 at 3, 30 at 10; p95 is the 684th, 3 hosts × 15 = 45.00.
    hosts_line = lines["meter:hosts"]
    assert Decimal(hosts_line["quantity"]) == 3 and Decimal(hosts_line["amount"]) == 45
    # 2.5 KB × 0.02 = 0.05
    assert Decimal(lines["meter:windows_kb"]["amount"]) == Decimal("0.05")


async def test_the_current_month_prices_the_level_so_far_for_the_month(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, levels_document())
    await create_customer(client, admin, key="acme")
    now = utcnow()
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    contract = await create_contract(
        client, admin, customer="acme", plan="team", starts_at=iso(month)
    )
    # 10 GB read three days before the month (carried in), 40 GB from two hours ago.
    switch = max(month + timedelta(minutes=1), now - 2 * HOUR).replace(microsecond=0)
    # The old reading may lie outside the late window: placed through the service. The rest
    # through the API.
    old = [event("g0", type="storage.gauge", time=month - 3 * DAY, data={"gb": 10})]
    assert (await ingest_at(app, old, received=now)).accepted == 1
    backend = await create_key(app, scopes=["check"])
    sent = await send(
        client,
        backend,
        [
            event("g1", type="storage.gauge", time=switch, data={"gb": 40}),
            *transfers("t", switch),
        ],
    )
    assert sent.json()["accepted"] == 4
    response = await client.get(
        f"/v1/contracts/{contract['id']}/invoice-preview",
        params={"period": month.strftime("%Y-%m")},
        headers=finance,
    )
    assert response.status_code == 200, response.text
    invoice = response.json()
    assert invoice["to_date"] is True
    as_of = datetime.fromisoformat(invoice["as_of"])
    line = next(line for line in invoice["lines"] if line["code"] == "meter:storage_gb")
    # The average from the month's start to as_of, priced for the whole month (a fee's
    # fraction, 1): (average − 0.5) × 0.10, rounded once.
    seconds = Fraction((as_of - month).total_seconds())
    mean = (
        10 * Fraction((switch - month).total_seconds())
        + 40 * Fraction((as_of - switch).total_seconds())
    ) / seconds
    expected = round((mean - Fraction(1, 2)) * Fraction(1, 10) * 100) / Fraction(100)
    assert Fraction(Decimal(line["amount"])) == expected
    assert line["source"]["fraction"] == "1" and line["source"]["events"] == 1
    windows = next(line for line in invoice["lines"] if line["code"] == "meter:windows_kb")
    assert Decimal(windows["quantity"]) == Decimal("2.5") and windows["source"]["events"] == 2
    assert Decimal(windows["amount"]) == Decimal("0.05") and "level" not in windows["source"]


async def test_as_of_an_instant_late_readings_and_transfers_are_left_out(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from allotment.db import session_scope
    from allotment.policy.catalog_cache import load_catalog
    from allotment.usage import totals
    from tests.factories.contracts import customer_id

    await publish_policy(client, admin, levels_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, customer="acme", plan="team", starts_at=iso(NOV))
    hour = NOV + 3 * DAY + 19 * HOUR
    first, later = hour + 2 * HOUR, hour + 30 * HOUR
    on_time = [
        *transfers("a", hour + timedelta(minutes=10)),
        event("g1", type="storage.gauge", time=hour, data={"gb": 10}),
    ]
    arrived_late = [
        *transfers("b", hour + timedelta(minutes=20)),
        event("g2", type="storage.gauge", time=hour + timedelta(minutes=30), data={"gb": 30}),
    ]
    assert (await ingest_at(app, on_time, received=first)).accepted == 4
    assert (await ingest_at(app, arrived_late, received=later)).accepted == 4
    owner = await customer_id(app)
    async with session_scope(app.state.sessionmaker) as session:
        catalog = (await load_catalog(session))[1]
    meters = [catalog.meters[m] for m in ("windows_kb", "all_kb", "storage_gb")]

    async def totals_as_of(as_of: datetime, start: datetime) -> dict[str, Any]:
        async with session_scope(app.state.sessionmaker) as session:
            found = await totals.read(
                session,
                customer_id=owner,
                meters=meters,
                start=start,
                end=hour + HOUR,
                as_of=as_of,
            )
        out: dict[str, Any] = {
            m.name: found.by_meter[m.name].total(start, hour + HOUR).quantity for m in meters
        }
        out["late"] = {name: t.quantity for name, t in found.late.by_meter.items()}
        return out

    # As of `first`: only the first three transfers and the 10 GB reading.
    assert await totals_as_of(first, hour) == {
        "windows_kb": Decimal("2.5"),
        "all_kb": 5,
        "storage_gb": 10,
        "late": {"windows_kb": Decimal("2.5"), "all_kb": 5, "storage_gb": 30},
    }
    # Later, all of them; the average: 10 GB for 30 minutes, then 30 GB.
    assert await totals_as_of(later, hour) == {
        "windows_kb": 5,
        "all_kb": 10,
        "storage_gb": 20,
        "late": {},
    }
    # A cut hour, as of `first`: from 19:15, only what was sent by then (none of it).
    cut = await totals_as_of(first, hour + timedelta(minutes=15))
    assert cut["windows_kb"] == 0 and cut["all_kb"] == 0 and cut["storage_gb"] == 10
