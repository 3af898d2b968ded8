"""The fault: the service killed (SIGKILL) for 10 s while an application checks and tracks
through the SDK. Checks keep answering from artifacts — only those artifacts can decide —
events are spooled; the service back, every event is delivered and counted exactly once
(verified in PostgreSQL)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from tests.check.servers import Worker, free_port
from tests.conftest import Stores

from allotment_client import Allotment, AllotmentError, RetryPolicy
from conftest import Service

OUTAGE_S = 10.0


async def test_checks_answer_from_artifacts_and_events_are_delivered_once_across_an_outage(
    service: Service, stores: Stores, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"fault-{uuid.uuid4().hex[:8]}"
    port = free_port()
    worker = Worker(stores.env(), port, tmp_path / "worker-1.log")
    await worker.wait_ready()
    down = threading.Event()
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    tracked: list[str] = []

    def application() -> None:
        with Allotment(
            worker.base_url,
            service.key,
            local=True,
            source=source,
            spool=tmp_path / "spool",
            retry=RetryPolicy(attempts=2, backoff=0.05),
            flush_interval=0.1,
        ) as sdk:
            while not stop.is_set():
                phase = "down" if down.is_set() else "up"
                reports = sdk.check(customer, "reports")
                outcomes[f"{phase}:local:{reports.allowed}:{reports.local}"] += 1
                try:
                    editor = sdk.check(customer, "editor", subject="ann")
                    outcome = editor.reason
                except AllotmentError:
                    outcome = "error"
                if down.is_set() or phase == "up":  # the whole call inside one phase
                    outcomes[f"{phase}:remote:{outcome}"] += 1
                tracked.append(sdk.track("api.call", customer, {"count": 3}))
                time.sleep(0.01)
            assert sdk.flush(60), "the spooled events were not delivered"

    app = asyncio.create_task(asyncio.to_thread(application))
    try:
        await asyncio.sleep(2)
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        down.set()  # after the kill: no answer can come from now on
        await asyncio.sleep(OUTAGE_S)
        down.clear()  # before the restart: a check labelled "down" never met the new worker
        worker = Worker(stores.env(), port, tmp_path / "worker-2.log")
        await worker.wait_ready()
        await asyncio.sleep(2)
    finally:
        stop.set()
        await app
        worker.terminate()

    # While down, every check an artifact can decide answered from it, and nothing else did.
    assert outcomes["down:local:True:True"] > 50, outcomes
    assert not [k for k in outcomes if k.startswith("down:local:") and k != "down:local:True:True"]
    assert outcomes["down:remote:error"] > 0, outcomes
    assert [k for k in outcomes if k.startswith("down:remote:")] == ["down:remote:error"]
    assert outcomes["up:remote:seat_required"] > 0, outcomes  # answered again once back

    assert len(set(tracked)) == len(tracked) > 100
    ids = "SELECT count(*) FROM usage_event_ids WHERE source = :source"
    assert await service.scalar(ids, source=source) == len(tracked)
    counted = (
        "SELECT coalesce(sum(c.value), 0) FROM usage_counters c JOIN customers k "
        "ON k.id = c.customer_id WHERE k.key = :customer AND c.meter = 'api_calls'"
    )
    assert await service.scalar(counted, customer=customer) == 3 * len(tracked)
