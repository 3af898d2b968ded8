"""Fault: an API worker is SIGKILLed mid-request, under load, while clients retry.

Requirement (reliability issue): clients retry with their idempotency keys (and events with
their ids) on the other worker; no allocation is made twice, no event is lost or counted
twice; then the invariants hold.

Each worker is killed in turn (worker 0, then 1, then 0 again) at a moment when requests —
writes among them — are in flight to it, and a new process is started on its port. What
was in flight either committed (its retry is then answered from the stored Idempotency-Key
response, or reported as a duplicate event) or rolled back (its retry does it anew); the
counts of both are reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.faults.conftest import MakeCluster
from tests.faults.invariants import verify
from tests.faults.load import WRITES, Load
from tests.faults.scenario import progressed, running_load, warmed

KILLS = (0, 1, 0)


def _busy(load: Load, index: int) -> Callable[[], bool]:
    """Writes (and so open transactions, soon) are in flight to worker `index`."""
    return lambda: load.inflight_writes[index] >= 2


def _served(load: Load, index: int, since: float) -> Callable[[], bool]:
    """Worker `index` answered a request sent after `since`."""
    return lambda: any(
        r.worker == index and r.sent >= since and r.status == 200 for r in load.ledger.records
    )


async def test_worker_killed_mid_request_under_load(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster()
    started = time.perf_counter()
    kills: list[dict[str, Any]] = []
    async with running_load(cluster) as run:
        load, ledger = run.load, run.load.ledger
        await warmed(load)
        for index in KILLS:
            # Wait for a moment with writes in flight to this worker, then kill it there.
            await load.until(_busy(load, index), within=20)
            in_flight = (load.inflight[index], load.inflight_writes[index])
            killed = time.perf_counter()
            cluster.kill_worker(index)
            # The other worker carries the load meanwhile (clients fail over).
            await progressed(load, killed, writes=30)
            respawn_s = await cluster.respawn_worker(index)
            back = time.perf_counter()
            kills.append(
                {
                    "worker": index,
                    "in flight (all, writes)": in_flight,
                    "failed attempts on it": sum(
                        1
                        for r in ledger.records
                        if r.worker == index and killed <= r.done and not isinstance(r.status, int)
                    ),
                    "respawned in s": round(respawn_s, 2),
                }
            )
            # It serves again before the next kill.
            await load.until(_served(load, index, back), within=10)
        await progressed(load, time.perf_counter(), writes=40)
        await run.finish()

    errors = [r for r in ledger.records if not isinstance(r.status, int)]
    # Cut mid-request: the connection was up and the request sent when the process died
    # (refused connections to a dead worker are the rest).
    cut = [r for r in errors if r.status != "conn:ConnectError"]
    assert cut, "no request was cut mid-flight by a kill"
    failed = [r for r in ledger.records if isinstance(r.status, int) and r.status >= 500]
    assert not failed, failed[:3]
    figures: dict[str, Any] = await verify(cluster, load, run.sampler)
    report = {
        "load": ledger.summary(),
        "kills": kills,
        "attempts without an answer": len(errors),
        "of which cut mid-request": {
            "all": len(cut),
            "writes": sum(1 for r in cut if r.kind in WRITES),
        },
        "writes": ledger.statuses(*WRITES),
        "invariants": figures,
        "test s": round(time.perf_counter() - started, 1),
    }
    print("\nFAULT worker killed:", report)
