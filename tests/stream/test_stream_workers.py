"""Two real API workers (`uvicorn allotment.app:create_app --factory`, separate processes) on
one PostgreSQL and Redis: a change made through one reaches a stream on the other, and a
client that left one worker resumes on the other with exactly what it missed (the journal's
ids are global)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.check.servers import Worker, free_port
from tests.factories.contracts import create_contract
from tests.factories.customers import create_customer
from tests.factories.policies_for_contracts import demo_document, publish_policy
from tests.stream.support import Listener, amend


async def test_a_change_through_a_reaches_b_and_a_client_resumes_on_the_other_worker(
    stores: Any, admin: dict[str, str], backend: dict[str, str], tmp_path: Path
) -> None:
    workers = [Worker(stores.env(), free_port(), tmp_path / f"worker-{i}.log") for i in (0, 1)]
    try:
        await asyncio.gather(*(worker.wait_ready() for worker in workers))
        a_url, b_url = (worker.base_url for worker in workers)
        async with (
            httpx.AsyncClient(base_url=a_url, timeout=10) as a,
            httpx.AsyncClient(base_url=b_url, timeout=10) as b,
        ):
            await publish_policy(a, admin, demo_document())
            await create_customer(a, admin, key="acme")
            contract = await create_contract(a, admin, customer="acme", plan="team")

            # 1. Made through A, seen on B.
            async with Listener(f"{b_url}/v1/stream", backend) as on_b:
                contract = await amend(a, admin, contract, 12)
                await on_b.next("customer.changed", customer="acme")
                document = demo_document()
                document["plans"]["team"]["features"] += ["sso", "audit_log"]
                version = await publish_policy(a, admin, document)
                last = await on_b.next("policy.published", version=version)

            # 2. The client has left B; changes go by, through both workers.
            async with Listener(f"{a_url}/v1/stream", backend) as witness:
                for n, http in enumerate((a, b, a, b)):
                    contract = await amend(http, admin, contract, 20 + n)
                back = {"to_version": 1}
                rolled = await b.post("/v1/policies/rollback", json=back, headers=admin)
                assert rolled.status_code == 200, rolled.text
                missed = await witness.until(lambda events: len(events) >= 5)

            # 3. It comes back on A with B's last id: exactly what it missed, in order.
            async with Listener(f"{a_url}/v1/stream", backend, last_event_id=last.id) as on_a:
                await on_a.until(lambda events: len(events) >= len(missed))
                await asyncio.sleep(0.5)  # and nothing twice
                assert [(e.id, e.event, e.data) for e in on_a.events] == [
                    (e.id, e.event, e.data) for e in missed
                ]
                assert missed[-1].json()["rollback"] is True
        for worker in workers:
            assert worker.proc.poll() is None, worker.log_path.read_text()
            assert "Traceback" not in worker.log_path.read_text()
    finally:
        for worker in workers:
            worker.terminate()
