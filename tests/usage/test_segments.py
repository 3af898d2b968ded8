"""Exact hours of count and sum meters summed in the database (usage/segments.py): the same
totals as reading every event, at the instants the range is cut at; a total asked between
other instants is refused; a value stored as something other than a JSON number is read as
the events' own reading reads it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from allotment.policy.catalog import Meter
from allotment.usage.readings import Reading
from allotment.usage.segments import SplitPiece
from allotment.usage.totals import Ledger
from tests.billing.test_boundaries import _preview, _recorded_before, _sql, tokens, tokens_policy
from tests.factories.contracts import create_contract, iso
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.usage import ingest_at

HOUR = timedelta(hours=1)
CUT = datetime(2026, 10, 5, 10, 30, tzinfo=UTC)  # the contract starts inside the 10:00 hour


def test_a_total_between_instants_not_read_at_is_refused() -> None:
    meter = Meter(name="tokens", event_type="llm.tokens", aggregation="sum", property="tokens")
    hour = CUT.replace(minute=0)
    piece = Reading(CUT, "", Decimal(17), events=2, until=hour + HOUR)
    ledger = Ledger(meter, exact={hour: [Reading(hour, "", Decimal(4), 1, CUT), piece]})
    assert ledger.total(CUT, hour + HOUR).quantity == 17
    assert ledger.total(hour, hour + HOUR).events == 3
    with pytest.raises(SplitPiece):
        ledger.total(CUT + timedelta(minutes=5), hour + HOUR)


async def test_a_value_stored_as_a_string_is_read_as_events_read_it(
    app: Any, client: httpx.AsyncClient, admin: dict[str, str], finance: dict[str, str]
) -> None:
    await publish_policy(client, admin, tokens_policy())
    await create_customer(client, admin, key="acme")
    contract = (await create_contract(client, admin, plan="team", starts_at=iso(CUT)))["id"]
    await _recorded_before(app)
    received = datetime(2026, 10, 6, tzinfo=UTC)
    sent = [tokens("before", CUT - timedelta(minutes=10), 100), tokens("after", CUT, 5)]
    await ingest_at(app, sent, received=received)
    # Stored before the meter read `tokens` as a number: the events' reading takes "12" as 12.
    await _sql(
        app,
        "INSERT INTO usage_events (customer_id, tenant, type, source, id, time, data, "
        "received_at) SELECT id, NULL, 'llm.tokens', 'old', 'str', :t, "
        "CAST('{\"tokens\": \"12\"}' AS jsonb), :r FROM customers WHERE key = 'acme'",
        t=CUT + timedelta(minutes=10),
        r=received,
    )
    invoice = await _preview(client, finance, contract, "2026-10")
    line = next(one for one in invoice["lines"] if one["code"] == "meter:tokens")
    # The event before the contract's start, in the same hour, is not the contract's.
    assert line["source"]["total"] == "17" and line["source"]["events"] == 2
