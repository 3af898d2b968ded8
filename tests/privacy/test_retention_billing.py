"""The raw events' retention never changes a bill (docs/privacy.md, "Retention"): after the
worker's purge, an invoice preview, a reconciliation and usage reads answer byte for byte as
before, though the hours a contract's start, amendment and end and a policy activation cut are
read from raw events, and the purge did delete the events no read needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text

from allotment.db import session_scope
from allotment.kit.clock import utcnow
from allotment.worker import run_once
from tests.billing.test_boundaries import tokens, tokens_policy
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import event, ingest_at

START = datetime(2026, 10, 14, 19, 53, tzinfo=UTC)
AMENDED = datetime(2026, 10, 17, 10, 17, 45, tzinfo=UTC)
ACTIVATED = datetime(2026, 10, 16, 11, 20, tzinfo=UTC)  # version 2, mid-hour
END = datetime(2026, 10, 20, 8, 20, 30, tzinfo=UTC)
RECEIVED = datetime(2026, 10, 25, tzinfo=UTC)
AS_OF = "2026-11-01T00:00:00Z"


async def _reads(client: httpx.AsyncClient, finance: dict[str, str], contract: str) -> list[Any]:
    asks = [
        (f"/v1/contracts/{contract}/invoice-preview", {"period": "2026-10", "as_of": AS_OF}),
        (f"/v1/contracts/{contract}/reconciliation", {"period": "2026-10"}),
        ("/v1/customers/acme/usage", {"meter": "tokens", "from": iso(START), "to": iso(END)}),
        ("/v1/customers/acme/usage", {"meter": "tokens", "from": iso(AMENDED), "to": iso(END)}),
        ("/v1/customers/acme/usage", {"meter": "tokens"}),
        ("/v1/customers/acme/usage", {"meter": "level", "from": iso(START), "to": iso(END)}),
    ]
    answers: list[Any] = []
    # `from` cuts an hour no boundary cuts, older than the cutoff: refused before the purge
    # and after it alike (part of that hour may be gone)
    cutting = {"meter": "tokens", "from": iso(START + timedelta(days=1, minutes=30))}
    refused = await client.get("/v1/customers/acme/usage", params=cutting, headers=finance)
    assert refused.status_code == 422, refused.text
    assert [e["path"] for e in refused.json()["errors"]] == ["from"]
    for path, params in asks:
        response = await client.get(path, params=params, headers=finance)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer.get("meters") != [], answer  # the reconciliation's meter figures
        answer.pop("computed_at", None)  # when the answer was computed: now
        answers.append(answer)
    return answers


async def test_the_purge_keeps_every_event_a_bill_or_a_usage_read_needs(
    app: Any,
    client: httpx.AsyncClient,
    admin: dict[str, str],
    finance: dict[str, str],
) -> None:
    policy = tokens_policy()
    policy["meters"]["level"] = {
        "event_type": "gauge.level",
        "aggregation": "average",
        "property": "value",
    }
    # a limit, so the reconciliation reads the meter too
    policy["plans"]["team"]["limits"] = {"tokens": {"limit": 1_000_000, "period": "month"}}
    await publish_policy(client, admin, policy)
    await create_customer(client, admin, key="acme")
    contract = str(
        (await create_contract(client, admin, plan="team", starts_at=iso(START), ends_at=iso(END)))[
            "id"
        ]
    )
    current = (await client.get(f"/v1/contracts/{contract}", headers=admin)).json()
    patched = await client.patch(
        f"/v1/contracts/{contract}",
        json={"seats": {"limit": 12}, "effective_at": iso(AMENDED)},
        headers={**admin, "If-Match": str(current["revision"])},
    )
    assert patched.status_code == 200, patched.text
    await publish_policy(client, admin, {**policy, "features": tokens_policy("v2")["features"]})
    async with session_scope(app.state.sessionmaker) as session:
        await session.execute(text("UPDATE contract_revisions SET created_at = :t"), {"t": START})
        await session.execute(
            text("UPDATE policy_activations SET at = CASE version WHEN 1 THEN :a ELSE :b END"),
            {"a": datetime(2026, 9, 20, tzinfo=UTC), "b": ACTIVATED},
        )
    cut_hours = [
        tokens("start", START + timedelta(minutes=2), 60_000),
        tokens("before-activation", ACTIVATED - timedelta(minutes=5), 7),
        tokens("after-activation", ACTIVATED + timedelta(minutes=5), 11),
        tokens("before-amend", AMENDED - timedelta(seconds=45), 1_000),
        tokens("after-amend", AMENDED + timedelta(seconds=15), 2_000),
        tokens("last", END - timedelta(seconds=30), 300),
    ]
    whole_hours = [
        tokens(f"whole-{n}", START + timedelta(days=1, hours=n, minutes=7), 100) for n in range(3)
    ]
    # an average meter's readings: each one counts in the period's average
    readings = [
        event(
            f"level-{n}",
            type="gauge.level",
            time=START + timedelta(days=1, hours=n),
            data={"value": v},
        )
        for n, v in ((1, 10), (2, 30), (3, 50))
    ]
    # the newest of the series, kept anyway: the purge must still find something to delete
    newest = [tokens("newest", END + timedelta(days=2), 1)]
    outcome = await ingest_at(app, cut_hours + whole_hours + readings + newest, received=RECEIVED)
    assert outcome.accepted == 13

    settings = app.state.settings.model_copy(update={"events_retention": timedelta(days=1)})
    shared = app.state.settings
    app.state.settings = settings  # the API's too
    try:
        before = await _reads(client, finance, contract)
        done = await run_once(app.state.sessionmaker, now=utcnow(), settings=settings)
        assert done["events_purged"] == len(whole_hours)
        async with session_scope(app.state.sessionmaker) as session:
            kept = (
                (await session.execute(text("SELECT id FROM usage_events WHERE source = 'tests'")))
                .scalars()
                .all()
            )
        assert sorted(kept) == sorted(e["id"] for e in cut_hours + readings + newest)
        assert await _reads(client, finance, contract) == before
    finally:
        app.state.settings = shared
