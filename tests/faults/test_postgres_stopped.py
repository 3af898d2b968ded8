"""Fault: PostgreSQL is stopped (`pg_ctl stop -m fast`) under load and started again.

Requirement (reliability issue): cached checks keep succeeding with `stale: true`; writes
answer 503 with Retry-After, never 500, and leave nothing half-written; the pool recovers
within 5 s of PostgreSQL returning; then the invariants hold.

The workers run with ALLOTMENT_SNAPSHOT_TTL_S=1 (default 300): an entry is fresh for a
second, so within a second of the stop every check needs PostgreSQL and must be answered
from the cache instead, flagged stale. (With the default TTL a warm entry simply stays
fresh through a short outage: answers are then correct but not marked stale.)

What is cached for a customer is what its checks loaded since its last write: every write
invalidates it (L1 everywhere, and L2). The customers only ever checked (r0, r1) must get
their usual answer, stale. A write customer whose last write committed after its last
load — typically one committed while `pg_ctl stop` ran — has nothing cached, and its checks
answer `outage_default` (its feature's on_outage; `reports`: deny) for the whole outage:
documented (docs/check.md, degraded modes), reported in the figures, not asserted against.

Known bugs this test runs into (see test_known_bugs.py): writes in flight during the stop
can answer 500 (bug 1), and a consume right after can be answered undecided (bug 2).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.check.servers import eventually
from tests.faults.conftest import MakeCluster
from tests.faults.invariants import verify
from tests.faults.load import WRITES
from tests.faults.scenario import PROBE, READ, at_least, decide, progressed, running_load, warmed

FRESH_S = 1.0  # ALLOTMENT_SNAPSHOT_TTL_S
# An entry loaded just before the stop may be stored a little later on a busy machine: checks
# sent this long after the stop can no longer find a fresh one.
STALE_FROM_S = FRESH_S + 1.0
OUTAGE_S = 3.5
RECOVERY_BOUND_S = 5.0  # the issue: the pool recovers within 5 s of PostgreSQL returning


async def test_postgres_stopped_and_restarted_under_load(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster({"ALLOTMENT_SNAPSHOT_TTL_S": str(FRESH_S)})
    started = time.perf_counter()
    async with (
        running_load(cluster) as run,
        httpx.AsyncClient(base_url=cluster.urls[0], headers=cluster.backend, timeout=10) as w0,
        httpx.AsyncClient(base_url=cluster.urls[1], headers=cluster.backend, timeout=10) as w1,
    ):
        load, ledger = run.load, run.load.ledger
        await warmed(load)
        before = {
            (worker, customer): await decide(http, customer, "reports")
            for worker, http in enumerate((w0, w1))
            for customer in READ
        }
        assert all(d["reason"] == "ok" and d["stale"] is False for d in before.values())
        # Seat writes without an Idempotency-Key take the fast path (seats/fastpath.py, its
        # own pool of autocommit connections) once the worker knows the customer's limits:
        # the first teaches them, the second is served in one statement.
        for index, http in enumerate((w0, w1)):
            for n in range(2):
                warm = await http.post(
                    f"/v1/customers/{PROBE}/seats", json={"subject": f"fast-{index}-{n}"}
                )
                assert warm.status_code == 201, warm.text

        # -- the fault ------------------------------------------------------------------------
        stopping = time.perf_counter()
        await asyncio.to_thread(cluster.stop_postgres)
        down = time.perf_counter()
        await progressed(load, down, writes=30)
        await at_least(OUTAGE_S, down)
        # The test's own probes, as well as the load's: a cached customer answers stale; a
        # write answers 503 with Retry-After as a problem document.
        for http in (w0, w1):
            for customer in READ:
                decision = await decide(http, customer, "reports")
                assert (decision["allowed"], decision["reason"], decision["stale"]) == (
                    True,
                    "ok",
                    True,
                ), decision
            refused = await http.post(
                f"/v1/customers/{PROBE}/seats",
                json={"subject": "while-down"},
                headers={"Idempotency-Key": "probe:while-down"},
            )
            fast = await http.post(
                f"/v1/customers/{PROBE}/seats", json={"subject": "fast-while-down"}
            )
            for answer in (refused, fast):
                assert answer.status_code == 503, answer.text
                assert int(answer.headers["retry-after"]) > 0
                assert answer.headers["content-type"] == "application/problem+json"

        # -- PostgreSQL returns -------------------------------------------------------------
        restarting = time.perf_counter()
        await asyncio.to_thread(cluster.start_postgres)
        back = time.perf_counter()

        async def recovery(index: int, http: httpx.AsyncClient) -> float:
            async def writes_and_fresh() -> bool:
                # A write commits again, and a check is answered from PostgreSQL again.
                written = await http.post(
                    f"/v1/customers/{PROBE}/seats",
                    json={"subject": f"after-{index}"},
                    headers={"Idempotency-Key": f"probe:after-{index}"},
                )
                if written.status_code == 503:
                    return False
                assert written.status_code == 201, written.text
                fast = await http.post(  # and the fast path, whose pool reconnects too
                    f"/v1/customers/{PROBE}/seats", json={"subject": f"fast-after-{index}"}
                )
                if fast.status_code == 503:
                    return False
                # 200: an earlier attempt committed, though its answer was lost with the pool.
                assert fast.status_code in (200, 201), fast.text
                return (await decide(http, READ[0], "reports"))["stale"] is False

            await eventually(writes_and_fresh, within=RECOVERY_BOUND_S, interval=0.05)
            return round(time.perf_counter() - back, 3)

        recovered = dict(
            zip(("w0", "w1"), await asyncio.gather(recovery(0, w0), recovery(1, w1)), strict=True)
        )
        # The load goes on past the bound, so that what it sees afterwards is checked too.
        await progressed(load, back, writes=60)
        await at_least(RECOVERY_BOUND_S + 0.5, back)
        await run.finish()

    # -- what the load saw ---------------------------------------------------------------------
    checks = ledger.of("check")
    failed = [r for r in checks if r.status != 200]
    assert not failed, f"{len(failed)} failed checks, e.g. {failed[:3]}"
    # Every check sent once cached entries had outlived their freshness, and answered before
    # PostgreSQL was started again, needed PostgreSQL: all must be flagged stale, and the
    # customers nobody writes to must get exactly the answer they got before.
    outage = [
        (r.customer, r.decision)
        for r in checks
        if r.sent >= down + STALE_FROM_S and r.done <= restarting and r.decision is not None
    ]
    assert outage, "no check ran during the outage"
    assert all(d["stale"] is True for _, d in outage), [d for _, d in outage if not d["stale"]][:3]
    read_only = [d for c, d in outage if c in READ and d["feature"] == "reports"]
    assert read_only and all((d["allowed"], d["reason"]) == (True, "ok") for d in read_only)
    # The write customers' caches are dropped by every write's invalidation: a customer
    # whose last write committed just before the stop has nothing cached, and its checks
    # fall back to on_outage (`outage_default`, still 200 and stale).
    reasons: dict[str, dict[str, int]] = {}
    for who, d in outage:
        per_customer = reasons.setdefault(str(who), {})
        per_customer[d["reason"]] = per_customer.get(d["reason"], 0) + 1
    # Writes while PostgreSQL was down: 503 with Retry-After, nothing else (never a 500).
    writes_down = [r for r in ledger.of(*WRITES) if r.sent >= down and r.done <= restarting]
    assert writes_down, "no write was attempted during the outage"
    assert all(r.status == 503 and r.problem and r.retry_after for r in writes_down), {
        str(r.status) for r in writes_down
    }
    broken = [r for r in ledger.records if not isinstance(r.status, int) or r.status in (500, 502)]
    assert not broken, [(r.kind, r.status, round(r.sent - down, 3)) for r in broken][:5]
    assert not [r for r in ledger.records if isinstance(r.status, int) and r.status > 503]
    # The pool recovered within the bound for the load too: nothing the load sent later than
    # RECOVERY_BOUND_S after PostgreSQL returned was refused or answered stale.
    late = [r for r in ledger.records if r.sent >= back + RECOVERY_BOUND_S]
    assert late and not [r for r in late if r.status == 503]
    assert not [r for r in late if r.decision is not None and r.decision["stale"]]
    after = [r for r in ledger.records if r.sent >= back]
    last_503 = max((r.done - back for r in after if r.status == 503), default=0.0)
    last_stale = max(
        (r.done - back for r in after if r.decision is not None and r.decision["stale"]),
        default=0.0,
    )
    figures: dict[str, Any] = await verify(cluster, load, run.sampler)
    report = {
        "load": ledger.summary(),
        "stop (pg_ctl -m fast) s": round(down - stopping, 2),
        "outage s": round(restarting - down, 2),
        "start s": round(back - restarting, 2),
        "checks in the outage (sent 2 s after the stop)": len(outage),
        "their reasons, by customer": dict(sorted(reasons.items())),
        "of which read-only customers, stale ok": len(read_only),
        "writes in the outage": ledger.statuses(
            *WRITES, where=lambda r: r.sent >= down and r.done <= restarting
        ),
        "probe write + fresh check again, s after start": recovered,
        "load: last 503 / last stale answer, s after start": [
            round(last_503, 3),
            round(last_stale, 3),
        ],
        "invariants": figures,
        "test s": round(time.perf_counter() - started, 1),
    }
    print("\nFAULT postgres stopped:", report)
