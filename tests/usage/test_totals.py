"""Meter totals between any instants, as of any instant (usage/totals.py, docs/usage.md
"Totals at any instant"): by hand on built ledgers, then through the usage API on real
PostgreSQL for every aggregation, with a cut hour and late arrivals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from allotment.policy.catalog import Meter
from allotment.usage.totals import Ledger, Reading, first_occurrences
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import event, ingest_at, metered_document

H = datetime(2026, 10, 14, 19, tzinfo=UTC)  # 19:00


def at(minutes: int) -> datetime:
    return H + timedelta(minutes=minutes)


def test_a_sum_splits_a_cut_hour_at_the_instant_and_takes_whole_hours_from_counters() -> None:
    meter = Meter("tokens", "llm.tokens", "sum", "tokens")
    ledger = Ledger(
        meter,
        counters={H: (Decimal(65_000), 2), H + timedelta(hours=1): (Decimal(7), 1)},
        exact={H: [Reading(at(50), "", Decimal(5_000)), Reading(at(55), "", Decimal(60_000))]},
    )
    assert ledger.total(at(53), at(120)).quantity == 60_007  # 19:53 to 21:00
    assert ledger.total(at(53), at(120)).events == 2
    assert ledger.total(H, at(53)).quantity == 5_000
    assert ledger.total(at(60), at(120)).quantity == 7  # a whole hour: the counter


def test_max_takes_the_greatest_inside_the_range() -> None:
    meter = Meter("jobs", "jobs.running", "max", "n")
    ledger = Ledger(
        meter,
        counters={H: (Decimal(9), 2), H - timedelta(hours=1): (Decimal(4), 1)},
        exact={H: [Reading(at(10), "", Decimal(9)), Reading(at(40), "", Decimal(3))]},
    )
    assert ledger.total(at(30), at(60)).quantity == 3
    assert ledger.total(H - timedelta(hours=1), at(30)).quantity == 9
    assert ledger.total(H - timedelta(hours=1), at(5)).quantity == 4


def test_a_unique_value_counts_where_it_was_first_seen_that_month() -> None:
    meter = Meter("logins", "app.login", "unique_count", "user")
    readings = [
        Reading(at(5), "", "s:ann"),
        Reading(at(20), "", "s:bob"),
        Reading(at(30), "", "s:ann"),  # seen at 19:05 already
        Reading(at(45), "", "s:cy"),
    ]
    # bob was first seen in an earlier hour of the month: not first seen in 19:00.
    ledger = Ledger(meter, exact={H: readings}, first_seen={H: {("", "s:ann"), ("", "s:cy")}})
    assert ledger.total(at(10), at(60)).quantity == 1  # cy (ann was first seen at 19:05)
    assert ledger.total(H, at(10)).quantity == 1  # ann
    assert first_occurrences(readings) == {H: {("", "s:ann"), ("", "s:bob"), ("", "s:cy")}}


async def _usage(
    client: httpx.AsyncClient, finance: dict[str, str], meter: str, start: datetime, end: datetime
) -> Decimal:
    response = await client.get(
        "/v1/customers/acme/usage",
        params={"meter": meter, "from": iso(start), "to": iso(end), "granularity": "hour"},
        headers=finance,
    )
    assert response.status_code == 200, response.text
    return Decimal(response.json()["total"])


async def test_the_usage_api_is_exact_in_a_cut_hour_for_every_aggregation(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, starts_at=iso(H - timedelta(days=1)))
    sent: list[dict[str, Any]] = [
        event("c1", time=at(50), data={"count": 5}),
        event("c2", time=at(55), data={"count": 7}),
        event("m1", type="jobs.running", time=at(50), data={"n": 30}),
        event("m2", type="jobs.running", time=at(55), data={"n": 4}),
        event("u1", type="app.login", time=at(10), data={"user": "ann"}),
        event("u2", type="app.login", time=at(56), data={"user": "ann"}),
        event("u3", type="app.login", time=at(57), data={"user": "bob"}),
    ]
    received = datetime.now(UTC) - timedelta(minutes=1)
    assert (await ingest_at(app, sent, received=received)).accepted == len(sent)
    end = H + timedelta(hours=2)
    assert await _usage(client, finance, "api_calls", at(53), end) == 7
    assert await _usage(client, finance, "peak_jobs", at(53), end) == 4
    assert await _usage(client, finance, "logins", at(53), end) == 1  # bob; ann came at 19:10
    assert await _usage(client, finance, "logins", H, end) == 2

    # A late login for bob at 19:20 moves his first occurrence out of [19:53, 21:00).
    late = [event("u4", type="app.login", time=at(20), data={"user": "bob"})]
    assert (await ingest_at(app, late, received=datetime.now(UTC))).accepted == 1
    assert await _usage(client, finance, "logins", at(53), end) == 0
    assert await _usage(client, finance, "logins", H, end) == 2


async def test_a_unique_count_as_of_an_instant_ignores_values_that_arrived_later(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    from allotment.db import session_scope
    from allotment.usage import totals
    from tests.factories.contracts import customer_id

    await publish_policy(client, admin, metered_document())
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, starts_at=iso(H - timedelta(days=1)))
    first, late = datetime(2026, 10, 15, tzinfo=UTC), datetime(2026, 10, 16, tzinfo=UTC)
    logins = [
        event("u1", type="app.login", time=at(10), data={"user": "ann"}),
        event("u3", type="app.login", time=at(57), data={"user": "bob"}),
    ]
    assert (await ingest_at(app, logins, received=first)).accepted == 2
    bob_earlier = [event("u4", type="app.login", time=at(20), data={"user": "bob"})]
    assert (await ingest_at(app, bob_earlier, received=late)).accepted == 1
    meter = Meter("logins", "app.login", "unique_count", "user")
    owner = await customer_id(app)

    async def total(as_of: datetime, start: datetime) -> tuple[Decimal, int]:
        async with session_scope(app.state.sessionmaker) as session:
            found = await totals.read(
                session,
                customer_id=owner,
                meters=[meter],
                start=start,
                end=H + timedelta(hours=2),
                as_of=as_of,
            )
        ledger = found.by_meter["logins"]
        return ledger.total(start, H + timedelta(hours=2)).quantity, found.late.events

    # As of the 15th, bob was first seen at 19:57; the late copy at 19:20 did not exist yet.
    assert await total(first + timedelta(hours=1), at(53)) == (1, 0)  # u4 is before 19:53
    assert await total(first + timedelta(hours=1), H) == (2, 1)
    assert await total(late, at(53)) == (0, 0)
