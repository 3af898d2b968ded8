"""Properties of invoices at their boundaries, through the API on real PostgreSQL and Redis
(docs/billing.md, "Boundaries"), over generated contracts — starts, amendments and ends at
arbitrary seconds, backdated and scheduled — policy activations at arbitrary instants, and
events at any time (many on or next to a boundary), some arriving late:

- the units billed across October's segments equal the sum of the events whose time lies in
  the contract's active time in October (nothing lost or counted twice at any boundary), and
  the usage API's total over that active time says the same;
- a preview taken at an `as_of` counts exactly the events received by then, and answers the
  same lines when it is asked again after later events have arrived.

The oracle is the generated events themselves, summed in Python: not the code under test.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from allotment.db import session_scope
from tests.billing.test_boundaries import tokens, tokens_policy
from tests.conftest import reset
from tests.factories.auth import create_key
from tests.factories.contracts import iso
from tests.factories.usage import ingest_at

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
RECORDED = datetime(2026, 9, 20, tzinfo=UTC)
ON_TIME = datetime(2026, 11, 5, tzinfo=UTC)  # when most events arrive
AS_OF = datetime(2026, 11, 5, 12, tzinfo=UTC)  # the preview's instant
LATE = datetime(2026, 11, 5, 18, tzinfo=UTC)  # when the late ones arrive
DAY = 86_400


@pytest.fixture
async def loop(app: Any) -> asyncio.AbstractEventLoop:
    """The session's event loop, for a synchronous Hypothesis test to run examples on."""
    return asyncio.get_running_loop()


def _policy(base: str) -> dict[str, Any]:
    document = tokens_policy(f"base {base}")
    document["plans"]["team"]["price"]["base"] = base
    return document


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    start = OCT + timedelta(seconds=draw(st.integers(-3 * DAY, 32 * DAY)))
    length = draw(st.none() | st.integers(1, 40 * DAY))
    end = None if length is None else start + timedelta(seconds=length)
    horizon = end or start + timedelta(days=40)
    span = int((horizon - start).total_seconds())
    amendments = sorted(draw(st.lists(st.integers(0, max(0, span - 1)), max_size=2, unique=True)))
    limits = draw(st.lists(st.sampled_from([10, 12, 20]), min_size=2, max_size=2))
    activations = sorted(draw(st.lists(st.integers(-2 * DAY, 31 * DAY), max_size=2)))
    boundaries = [start, *(start + timedelta(seconds=a) for a in amendments)]
    boundaries += [OCT + timedelta(seconds=a) for a in activations]
    if end is not None:
        boundaries.append(end)
    anywhere = st.integers(-2 * DAY, 33 * DAY).map(lambda s: OCT + timedelta(seconds=s))
    near = st.tuples(st.sampled_from(boundaries), st.integers(-90, 90)).map(
        lambda pair: pair[0] + timedelta(seconds=pair[1])
    )
    events = draw(
        st.lists(
            st.tuples(anywhere | near, st.integers(1, 1_000_000), st.booleans()),
            max_size=12,
        )
    )
    return {
        "start": start,
        "end": end,
        "amendments": [
            (start + timedelta(seconds=a), n) for a, n in zip(amendments, limits, strict=False)
        ],
        "activations": [OCT + timedelta(seconds=a) for a in activations],
        "events": events,
    }


async def _example(app: Any, scenario: dict[str, Any]) -> None:
    await reset(app)
    admin = await create_key(app, scopes=["admin"])
    finance = await create_key(app, scopes=["finance"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for base in ("310.00", *("620.00", "310.00")[: len(scenario["activations"])]):
            created = await client.post("/v1/policies", json=_policy(base), headers=admin)
            version = created.json()["version"]
            assert (await client.post(f"/v1/policies/{version}/publish", headers=admin)).is_success
        assert (
            await client.post("/v1/customers", json={"key": "acme", "name": "Acme"}, headers=admin)
        ).is_success
        body: dict[str, Any] = {"plan": "team", "kind": "standard"}
        body["starts_at"] = iso(scenario["start"])
        if scenario["end"] is not None:
            body["ends_at"] = iso(scenario["end"])
        made = await client.post("/v1/customers/acme/contracts", json=body, headers=admin)
        assert made.status_code == 201, made.text
        contract = made.json()
        for at, limit in scenario["amendments"]:
            patched = await client.patch(
                f"/v1/contracts/{contract['id']}",
                json={"seats": {"limit": limit}, "effective_at": iso(at)},
                headers={**admin, "If-Match": str(contract["revision"])},
            )
            assert patched.status_code == 200, patched.text
            contract = patched.json()
        async with session_scope(app.state.sessionmaker) as session:
            await session.execute(
                text("UPDATE contract_revisions SET created_at = :t"), {"t": RECORDED}
            )
            await session.execute(
                text("UPDATE policy_activations SET at = :t WHERE version = 1"), {"t": RECORDED}
            )
            for version, at in enumerate(scenario["activations"], start=2):
                await session.execute(
                    text("UPDATE policy_activations SET at = :t WHERE version = :v"),
                    {"t": at, "v": version},
                )
        events = [
            (tokens(f"e{i}", at, amount), at, amount, late)
            for i, (at, amount, late) in enumerate(scenario["events"])
        ]
        on_time = [e for e, _, _, late in events if not late]
        if on_time:
            assert (await ingest_at(app, on_time, received=ON_TIME)).accepted == len(on_time)

        active_start = max(OCT, scenario["start"])
        active_end = min(NOV, scenario["end"] or NOV)

        def expected(*, with_late: bool) -> Decimal:
            return Decimal(
                sum(
                    amount
                    for _, at, amount, late in events
                    if active_start <= at < active_end and (with_late or not late)
                )
            )

        url = f"/v1/contracts/{contract['id']}/invoice-preview"
        taken = await client.get(
            url, params={"period": "2026-10", "as_of": iso(AS_OF)}, headers=finance
        )
        assert taken.status_code == 200, taken.text
        assert _billed(taken.json()) == expected(with_late=False)

        late = [e for e, _, _, is_late in events if is_late]
        if late:
            assert (await ingest_at(app, late, received=LATE)).accepted == len(late)
        again = await client.get(
            url, params={"period": "2026-10", "as_of": iso(AS_OF)}, headers=finance
        )
        assert again.json()["lines"] == taken.json()["lines"]
        assert again.json()["subtotal"] == taken.json()["subtotal"]

        now = await client.get(url, params={"period": "2026-10"}, headers=finance)
        assert _billed(now.json()) == expected(with_late=True)
        if active_start < active_end:
            usage = await client.get(
                "/v1/customers/acme/usage",
                params={
                    "meter": "tokens",
                    "from": iso(active_start),
                    "to": iso(active_end),
                    "granularity": "day",
                },
                headers=finance,
            )
            assert usage.status_code == 200, usage.text
            assert Decimal(usage.json()["total"]) == expected(with_late=True)
            buckets = sum(Decimal(b["value"]) for b in usage.json()["buckets"])
            assert buckets == expected(with_late=True)


def _billed(invoice: dict[str, Any]) -> Decimal:
    return sum(
        (
            Decimal(line["source"]["total"])
            for line in invoice["lines"]
            if line["code"] == "meter:tokens"
        ),
        Decimal(0),
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_units_billed_equal_the_events_in_the_active_time_and_never_move(
    app: Any, loop: asyncio.AbstractEventLoop, scenario: dict[str, Any]
) -> None:
    loop.run_until_complete(_example(app, scenario))
