"""Devices per seat under a real race: 64 HTTP clients against two uvicorn processes (the
harness of tests/seats/test_race.py) register 128 distinct devices for one seat holder. The
pool lock (the customer's row) makes counting the subject's live devices and inserting one a
single step, so exactly `devices_per_seat` are granted and the database never shows more."""

from __future__ import annotations

import httpx

from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.licensing import licensing_document
from tests.factories.policies_for_contracts import publish_policy
from tests.factories.seats import assign
from tests.seats.test_race import (  # noqa: F401 - the module's fixtures, shared
    ATTEMPTS,
    Servers,
    backend,
    live,
    race,
    servers,
)

LIVE_DEVICES = (
    "SELECT count(*) FROM instances i JOIN customers c ON c.id = i.customer_id "
    "WHERE c.key = %(customer)s AND i.subject = 'ann' AND i.ended_at IS NULL "
    "AND i.lease_expires_at > now()"
)
N = 3


async def test_64_clients_register_at_most_n_devices_for_one_seat(
    live: Servers,  # noqa: F811
    client: httpx.AsyncClient,
    admin: dict[str, str],
    backend: dict[str, str],  # noqa: F811
) -> None:
    await publish_policy(client, admin, licensing_document(devices_per_seat=N))
    await create_customer(client, admin, key="acme")
    await create_contract(client, admin, plan="licensed", quantities={"seats": 5, "instances": 5})
    assert (await assign(client, backend, "ann")).status_code == 201
    bodies = [
        {"fingerprint": f"ann-device-{n:03d}", "kind": "vm", "subject": "ann"}
        for n in range(ATTEMPTS)
    ]
    outcome = await race(
        live, backend, "/v1/customers/acme/instances", bodies, sample=LIVE_DEVICES, customer="acme"
    )

    outcome.only(201, 409)
    granted, refused = outcome.status(201), outcome.status(409)
    assert len(granted) == N and len(refused) == ATTEMPTS - N
    assert outcome.peak() <= N
    for _, response in refused:
        problem = response.json()
        assert problem["reason"] == "device_limit", problem
        assert (problem["pool"], problem["limit"], problem["held"]) == ("devices", N, N)
    listed = await client.get("/v1/customers/acme/instances", headers=backend)
    assert sorted(i["fingerprint"] for i in listed.json()["items"]) == sorted(
        body["fingerprint"] for body, _ in granted
    )
