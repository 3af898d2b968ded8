"""A trial's conversion under load: a thread hammers checks against a real API process (the
harness of tests/seats/test_race.py) from before the conversion until after the trial's end,
while the conversion is recorded through another process, effective exactly when the trial
ends. Not one check may deny a feature both plans have, and none may answer trial_expired:
the new revision and the term's new end are one write, and a snapshot held by the checking
process is valid only until the trial's end, when it reloads and finds the paid terms."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from allotment.kit.clock import isoformat
from tests.factories.contracts import create_contract, days_from_now
from tests.factories.customers import create_customer
from tests.factories.licensing import licensing_document
from tests.factories.policies_for_contracts import publish_policy
from tests.seats.test_race import (  # noqa: F401 - the module's fixtures, shared
    Servers,
    backend,
    live,
    servers,
)

TRIAL_LEFT = 3.0  # seconds from the start to the trial's end
AFTER = 2.0  # seconds of checks after it


def hammer(base_url: str, headers: dict[str, str], until: float, into: list[Any]) -> None:
    with httpx.Client(base_url=base_url, headers=headers, timeout=10) as http:
        while time.monotonic() < until:
            sent = datetime.now(UTC)
            response = http.post("/v1/check", json={"customer": "acme", "feature": "reports"})
            into.append((sent, response.status_code, response.json()))


async def test_checks_never_see_the_trial_expire_across_its_conversion(
    live: Servers,  # noqa: F811
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],  # noqa: F811
) -> None:
    await publish_policy(client, admin, licensing_document())
    await create_customer(client, admin, key="acme")
    trial_end = datetime.now(UTC) + timedelta(seconds=TRIAL_LEFT)
    contract = await create_contract(
        client,
        admin,
        plan="basic",
        kind="trial",
        starts_at=days_from_now(-1),
        ends_at=isoformat(trial_end),
    )
    answers: list[Any] = []
    until = time.monotonic() + TRIAL_LEFT + AFTER
    thread = threading.Thread(
        target=hammer, args=(live.workers[0].base_url, backend, until, answers)
    )
    thread.start()
    try:
        await asyncio.sleep(TRIAL_LEFT - 1.0)
        converted = await client.post(
            f"/v1/contracts/{contract['id']}/convert",
            json={
                "plan": "licensed",
                "quantities": {"seats": 5, "instances": 5},
                "at": isoformat(trial_end),
            },
            headers=admin,
        )
        assert converted.status_code == 200, converted.text
        converted_at = datetime.now(UTC)
    finally:
        await asyncio.to_thread(thread.join)

    assert all(status == 200 for _, status, _ in answers), answers[:3]
    denied = [(sent, body) for sent, _, body in answers if not body["allowed"]]
    assert denied == [], denied[:3]
    assert not any(body.get("reason") == "trial_expired" for _, _, body in answers)
    # the hammer really crossed both instants
    assert sum(1 for sent, _, _ in answers if sent < converted_at) >= 10
    assert sum(1 for sent, _, _ in answers if sent > trial_end) >= 10
