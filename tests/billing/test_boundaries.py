"""Invoices at their edges, each worked by hand (docs/billing.md, "Boundaries"): a partial
hour at every segment boundary, nothing before a scheduled start, a backdated contract priced
from its start, seats priced like a fee in the current month, previews taken at an instant
(`as_of`) that later events never move, a pinned contract's single segment, intervals no
version could price, and the finance list as CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from allotment.db import session_scope
from allotment.kit.clock import isoformat, utcnow
from tests.factories.auth import create_key
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign
from tests.factories.usage import event, ingest_at

OCTOBER = "2026-10"
OCT = datetime(2026, 10, 1, tzinfo=UTC)
RECORDED = datetime(2026, 9, 20, tzinfo=UTC)  # when setup "happened", for closed months


def tokens_policy(description: str = "tokens") -> dict[str, Any]:
    """310.00 a month (10.00 a day in October); 3 seats included, then 25.00 each; every
    token 0.001."""
    return {
        "currency": "USD",
        "features": {
            "chat": {"meter": "tokens", "description": description},
            "editor": {"seat": "required"},
        },
        "meters": {
            "tokens": {"event_type": "llm.tokens", "aggregation": "sum", "property": "tokens"}
        },
        "plans": {
            "team": {
                "features": ["chat", "editor"],
                "seats": {"limit": 20, "model": "named"},
                "price": {
                    "base": "310.00",
                    "seat": {"unit": "25.00", "basis": "peak", "included": 3},
                    "meters": {"tokens": {"tiers": [{"unit": "0.001"}]}},
                },
            },
            "other": {"features": ["chat"], "price": {"base": "1.00"}},
        },
    }


def tokens(event_id: str, at: datetime, amount: int) -> dict[str, Any]:
    return event(event_id, type="llm.tokens", time=at, data={"tokens": amount})


async def _sql(app: Any, sql: str, **params: Any) -> None:
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text(sql), params)


async def _recorded_before(app: Any, moment: datetime = RECORDED) -> None:
    """Make the contract's revisions and the policy activations look recorded at `moment`,
    so a closed month can be previewed as of instants in it (the API stamps them now)."""
    await _sql(app, "UPDATE contract_revisions SET created_at = :t", t=moment)
    await _sql(app, "UPDATE policy_activations SET at = :t", t=moment)


async def _preview(
    client: httpx.AsyncClient, finance: dict[str, str], contract: str, period: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/v1/contracts/{contract}/invoice-preview",
        params={"period": period, **params},
        headers=finance,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _meter_lines(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for line in invoice["lines"] if line["code"] == "meter:tokens"]


async def _setup(client: httpx.AsyncClient, admin: dict[str, str], **contract: Any) -> str:
    await publish_policy(client, admin, tokens_policy())
    await create_customer(client, admin, key="acme")
    return str((await create_contract(client, admin, plan="team", **contract))["id"])


async def test_a_partial_hour_at_every_boundary_counts_exactly(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    start = datetime(2026, 10, 14, 19, 53, tzinfo=UTC)
    end = datetime(2026, 10, 20, 8, 20, 30, tzinfo=UTC)
    amended = datetime(2026, 10, 17, 10, 17, 45, tzinfo=UTC)
    contract = await _setup(client, admin, starts_at=iso(start), ends_at=iso(end))
    current = (await client.get(f"/v1/contracts/{contract}", headers=admin)).json()
    patched = await client.patch(
        f"/v1/contracts/{contract}",
        json={"seats": {"limit": 12}, "effective_at": iso(amended)},
        headers={**admin, "If-Match": str(current["revision"])},
    )
    assert patched.status_code == 200, patched.text
    outcome = await ingest_at(
        app,
        [
            tokens("before-start", start - timedelta(minutes=3), 5_000),  # 19:50: not billed
            tokens("first-hour", start + timedelta(minutes=2), 60_000),  # 19:55
            tokens("before-amend", amended - timedelta(seconds=45), 1_000),  # 10:17:00
            tokens("after-amend", amended + timedelta(seconds=15), 2_000),  # 10:18:00
            tokens("last-hour", end - timedelta(seconds=30), 300),  # 08:20:00
            tokens("after-end", end + timedelta(seconds=30), 7_000),  # 08:21:00: not billed
        ],
        received=utcnow(),
    )
    assert outcome.accepted == 6

    invoice = await _preview(client, finance, contract, OCTOBER)
    lines = _meter_lines(invoice)
    # Two groups: revision 1 [19:53 on the 14th, 10:17:45 on the 17th), revision 2 to the end.
    assert [line["source"]["total"] for line in lines] == ["61000", "2300"]
    assert [line["amount"] for line in lines] == ["61.00", "2.30"]
    assert [line["source"]["events"] for line in lines] == [2, 2]
    assert lines[0]["source"]["start"] == isoformat(start)
    assert lines[1]["source"]["end"] == isoformat(end)

    usage = await client.get(
        "/v1/customers/acme/usage",
        params={"meter": "tokens", "from": iso(start), "to": iso(end), "granularity": "hour"},
        headers=finance,
    )
    assert usage.status_code == 200, usage.text
    assert Decimal(usage.json()["total"]) == Decimal(63_300)
    first = usage.json()["buckets"][0]
    assert first["start"].startswith("2026-10-14T19:53:00")  # the part of 19:00 in range
    assert Decimal(first["value"]) == 60_000


async def test_nothing_is_billed_before_a_scheduled_start(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    starts = now + timedelta(minutes=5)
    if starts.month != now.month:
        pytest.skip("the month ends within five minutes")
    contract = await _setup(client, admin, starts_at=iso(starts))
    invoice = await _preview(client, finance, contract, now.strftime("%Y-%m"))
    assert invoice["lines"] == [] and invoice["subtotal"] == "0.00"


async def test_a_backdated_contract_is_priced_from_its_start(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    # Contract from October 1; the policy was published (its only activation) on October 2.
    contract = await _setup(client, admin, starts_at=iso(OCT))
    await _sql(app, "UPDATE policy_activations SET at = :t", t=OCT + timedelta(days=1))
    invoice = await _preview(client, finance, contract, OCTOBER)
    starts = {line["source"]["start"] for line in invoice["lines"]}
    assert starts == {isoformat(OCT)}
    base = next(line for line in invoice["lines"] if line["code"] == "base")
    assert base["amount"] == "310.00" and base["source"]["policy_versions"] == [1]


async def test_seats_in_the_current_month_are_priced_like_a_fee(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    now = datetime.now(UTC)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    contract = await _setup(client, admin, starts_at=iso(first))
    backend = await create_key(app, scopes=["check"])
    for n in range(7):
        assert (await assign(client, backend, f"user{n}")).status_code == 201
    invoice = await _preview(client, finance, contract, now.strftime("%Y-%m"))
    seats = next(line for line in invoice["lines"] if line["code"] == "seats")
    # (7 − 3) × 25.00 for the whole month, not for the share of it elapsed.
    assert seats["amount"] == "100.00" and seats["source"]["fraction"] == "1"


async def test_a_preview_as_of_an_instant_never_moves_when_late_events_arrive(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    contract = await _setup(client, admin, starts_at=iso(OCT))
    await _recorded_before(app)
    on_time = datetime(2026, 11, 1, 12, tzinfo=UTC)
    late = datetime(2026, 11, 3, 9, tzinfo=UTC)
    as_of = datetime(2026, 11, 2, tzinfo=UTC)
    await ingest_at(
        app,
        [tokens("a", OCT + timedelta(days=9), 10_000), tokens("b", OCT + timedelta(days=30), 500)],
        received=on_time,
    )
    url = f"/v1/contracts/{contract}/invoice-preview"
    params = {"period": OCTOBER, "as_of": iso(as_of)}
    before = await client.get(url, params=params, headers=finance)
    before_csv = await client.get(url, params=params, headers={**finance, "Accept": "text/csv"})
    assert before.status_code == 200, before.text
    assert _meter_lines(before.json())[0]["source"]["total"] == "10500"

    # Two late events for October (one in an hour that already has an on-time event) and
    # one for November arrive after as_of.
    await ingest_at(
        app,
        [
            tokens("c", OCT + timedelta(days=9, minutes=30), 4_000),
            tokens("d", OCT + timedelta(days=20), 250),
            tokens("e", datetime(2026, 11, 2, 8, tzinfo=UTC), 99),
        ],
        received=late,
    )
    after = await client.get(url, params=params, headers=finance)
    after_csv = await client.get(url, params=params, headers={**finance, "Accept": "text/csv"})
    assert after_csv.content == before_csv.content
    again, first = after.json(), before.json()
    assert again["lines"] == first["lines"] and again["subtotal"] == first["subtotal"]
    assert again["as_of"] == first["as_of"]
    assert first["late"] == {"events": 0, "meters": []}
    assert again["late"] == {
        "events": 2,
        "meters": [{"meter": "tokens", "events": 2, "units": "4250"}],
    }
    assert before.content != after.content  # only `late` tells them apart
    now = await _preview(client, finance, contract, OCTOBER)
    assert _meter_lines(now)[0]["source"]["total"] == "14750"
    assert now["late"]["events"] == 0


async def test_late_counts_only_events_a_meter_counted(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    policy = tokens_policy()
    policy["meters"]["tokens"]["filter"] = "data.model != 'free'"
    await publish_policy(client, admin, policy)
    await create_customer(client, admin, key="acme")
    contract = (await create_contract(client, admin, plan="team", starts_at=iso(OCT)))["id"]
    await _recorded_before(app)
    as_of = datetime(2026, 11, 2, tzinfo=UTC)
    late = [
        event("paid", type="llm.tokens", time=OCT, data={"tokens": 40, "model": "pro"}),
        event("free", type="llm.tokens", time=OCT, data={"tokens": 7, "model": "free"}),
        tokens("bare", OCT, 7),  # no model: the filter fails on it, so leaves it out
    ]
    await ingest_at(app, late, received=as_of + timedelta(hours=1))
    invoice = await _preview(client, finance, contract, OCTOBER, as_of=iso(as_of))
    # Only the event the meter counted is late usage; the other two are billed nowhere.
    assert invoice["late"] == {
        "events": 1,
        "meters": [{"meter": "tokens", "events": 1, "units": "40"}],
    }


@pytest.mark.parametrize("filtered", [True, False], ids=["with-a-filtered-meter", "plain"])
async def test_late_counts_what_plain_and_filtered_meters_read(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    finance: dict[str, str],
    filtered: bool,
) -> None:
    """A meter without a filter decides in the database (an event of its type, with the
    property it reads present and not null), a filtered one in Python; an event some meter
    counts is late usage once. With one plain meter per type, the late sums say it alone."""
    policy = tokens_policy()
    if filtered:
        policy["meters"]["pro_calls"] = {
            "event_type": "llm.request",
            "aggregation": "count",
            "filter": "data.model == 'pro'",
        }
        policy["plans"]["team"]["price"]["meters"]["pro_calls"] = {"tiers": [{"unit": "0.01"}]}
    await publish_policy(client, admin, policy)
    await create_customer(client, admin, key="acme")
    contract = (await create_contract(client, admin, plan="team", starts_at=iso(OCT)))["id"]
    await _recorded_before(app)
    as_of = datetime(2026, 11, 2, tzinfo=UTC)
    received = as_of + timedelta(hours=1)
    late = [
        tokens("a", OCT, 40),
        tokens("b", OCT, 5),
        event("pro", type="llm.request", time=OCT, data={"model": "pro"}),
        event("free", type="llm.request", time=OCT, data={"model": "free"}),
    ]
    outcome = await ingest_at(app, late, received=received)
    assert outcome.accepted == 4, outcome  # unmetered ones are stored too
    # Stored before the tokens meter read its property (ingest refuses them now): billed
    # nowhere, so not late usage either.
    for n, data in enumerate(('{"tokens": null}', '{"other": 1}', "[1]")):
        await _sql(
            app,
            "INSERT INTO usage_events (customer_id, tenant, type, source, id, time, data, "
            "received_at) SELECT id, NULL, 'llm.tokens', 'old', :id, :t, CAST(:d AS jsonb), "
            ":r FROM customers WHERE key = 'acme'",
            id=f"old{n}",
            t=OCT,
            d=data,
            r=received,
        )
    invoice = await _preview(client, finance, contract, OCTOBER, as_of=iso(as_of))
    by_meter = {m["meter"]: (m["events"], m["units"]) for m in invoice["late"]["meters"]}
    if filtered:
        assert invoice["late"]["events"] == 3
        assert by_meter == {"tokens": (2, "45"), "pro_calls": (1, "1")}
    else:
        assert invoice["late"]["events"] == 2
        assert by_meter == {"tokens": (2, "45")}


async def test_as_of_is_within_or_after_the_period_and_never_ahead(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    contract = await _setup(client, admin, starts_at=iso(OCT))
    url = f"/v1/contracts/{contract}/invoice-preview"
    for value in ("2026-09-30T23:59:59Z", iso(datetime.now(UTC) + timedelta(hours=1))):
        refused = await client.get(url, params={"period": OCTOBER, "as_of": value}, headers=finance)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert [e["path"] for e in refused.json()["errors"]] == ["query.as_of"]
    naive = await client.get(
        url, params={"period": OCTOBER, "as_of": "2026-10-20T00:00:00"}, headers=finance
    )
    assert naive.status_code == 422
    default = await _preview(client, finance, contract, OCTOBER)
    assert default["as_of"].endswith("Z") or default["as_of"].endswith("+00:00")
    assert datetime.fromisoformat(default["as_of"]).microsecond == 0


async def test_a_pinned_contract_has_one_segment_per_revision(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    contract = await _setup(client, admin, starts_at=iso(OCT), policy_version=1)
    await publish_policy(client, admin, tokens_policy("v2"))
    await publish_policy(client, admin, tokens_policy("v3"))
    await _sql(
        app,
        "UPDATE policy_activations SET at = CASE version WHEN 1 THEN :a WHEN 2 THEN :b ELSE :c END",
        a=OCT,
        b=OCT + timedelta(days=10),
        c=OCT + timedelta(days=20),
    )
    report = await client.get(
        f"/v1/contracts/{contract}/reconciliation", params={"period": OCTOBER}, headers=finance
    )
    assert report.status_code == 200, report.text
    assert [s["revision"] for s in report.json()["seats"]] == [1], report.json()


async def test_reconciliation_names_an_interval_no_version_could_price(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    contract = await _setup(client, admin, starts_at=iso(OCT))
    without_team = tokens_policy()
    del without_team["plans"]["team"]
    version = await publish_policy(
        client, admin, without_team, force=True
    )  # orphans the team contract
    await _sql(app, "UPDATE policy_activations SET at = :t WHERE version = 1", t=OCT)
    await _sql(
        app,
        "UPDATE policy_activations SET at = :t WHERE version = :v",
        t=OCT + timedelta(days=15),
        v=version,
    )
    report = await client.get(
        f"/v1/contracts/{contract}/reconciliation", params={"period": OCTOBER}, headers=finance
    )
    found = [d for d in report.json()["discrepancies"] if d.startswith("nothing priced")]
    assert found == [
        f"nothing priced {isoformat(OCT + timedelta(days=15))} to "
        f"{isoformat(datetime(2026, 11, 1, tzinfo=UTC))}: plan 'team' is not in policy "
        f"version {version}; no line covers it"
    ]
    invoice = await _preview(client, finance, contract, OCTOBER)
    base = next(line for line in invoice["lines"] if line["code"] == "base")
    assert base["amount"] == "150.00"  # October 1 to 16: 15 days × 10.00, the rest unpriced


async def test_the_finance_list_answers_csv(
    client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    contract = await _setup(client, admin, starts_at=iso(OCT))
    listed = await client.get(
        "/v1/invoice-preview",
        params={"period": OCTOBER},
        headers={**finance, "Accept": "text/csv"},
    )
    assert listed.status_code == 200 and listed.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(listed.text)))
    assert rows == [
        {"contract": contract, "customer": "acme", "currency": "USD", "subtotal": "310.00"}
    ]
