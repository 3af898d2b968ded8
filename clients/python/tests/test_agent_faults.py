"""Faults with real processes: the upstream (a uvicorn worker) SIGKILLed for 10 s while an
application checks and tracks through the agent, and the agent itself SIGKILLed with events
in its spool. Checks keep answering from artifacts — only those artifacts can decide —
events are spooled; once the upstream is back every acknowledged event is counted exactly
once (verified in PostgreSQL), across the agent's own restart."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from agent_process import AgentProcess
from tests.check.servers import Worker, free_port
from tests.conftest import Stores

from conftest import Service

OUTAGE_S = 10.0
IDS = "SELECT count(*) FROM usage_event_ids WHERE source = :source"
COUNTED = (
    "SELECT coalesce(sum(c.value), 0) FROM usage_counters c JOIN customers k "
    "ON k.id = c.customer_id WHERE k.key = :customer AND c.meter = 'api_calls'"
)


def event(customer: str, source: str, n: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"e-{n}",
        "source": source,
        "type": "api.call",
        "subject": customer,
        "data": {"count": 3},
    }


async def warm(agent: AgentProcess, customer: str) -> None:
    async with httpx.AsyncClient(base_url=agent.url, timeout=5) as http:
        started = time.monotonic()
        body = {"customer": customer, "feature": "reports"}
        while (await http.post("/v1/check", json=body)).headers.get(
            "allotment-decided-by"
        ) != "agent":
            assert time.monotonic() - started < 20, "no artifact"
            await asyncio.sleep(0.05)


async def drained(agent: AgentProcess, within: float = 60.0) -> None:
    started = time.monotonic()
    while (health := await agent.health())["spool"]["backlog"]:
        assert time.monotonic() - started < within, health
        await asyncio.sleep(0.1)


async def test_the_upstream_killed_for_10_s_checks_answer_from_artifacts_events_counted_once(
    service: Service, stores: Stores, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"agent-fault-{uuid.uuid4().hex[:8]}"
    port = free_port()
    worker = Worker(stores.env(), port, tmp_path / "worker-1.log")
    await worker.wait_ready()
    agent = AgentProcess(
        worker.base_url, service.key, tmp_path / "spool", tmp_path / "agent.log", port=free_port()
    )
    await agent.wait_ready()
    await warm(agent, customer)
    down = threading.Event()
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    acknowledged: list[str] = []

    def application() -> None:
        n = 0
        with httpx.Client(base_url=agent.url, timeout=10) as http:
            while not stop.is_set():
                phase = "down" if down.is_set() else "up"
                reports = http.post("/v1/check", json={"customer": customer, "feature": "reports"})
                by = reports.headers.get("allotment-decided-by")
                allowed = reports.json().get("allowed") if reports.status_code == 200 else None
                outcomes[f"{phase}:local:{reports.status_code}:{by}:{allowed}"] += 1
                editor = http.post(
                    "/v1/check", json={"customer": customer, "feature": "editor", "subject": "ann"}
                )
                if phase == ("down" if down.is_set() else "up"):  # the whole call in one phase
                    by = editor.headers.get("allotment-decided-by")
                    outcomes[f"{phase}:remote:{editor.status_code}:{by}"] += 1
                n += 1
                sent = http.post("/v1/events", json=event(customer, source, n))
                if sent.status_code == 202 and sent.json()["spooled"] == 1:
                    acknowledged.append(f"e-{n}")
                time.sleep(0.01)

    app = asyncio.create_task(asyncio.to_thread(application))
    try:
        await asyncio.sleep(2)
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        down.set()
        await asyncio.sleep(OUTAGE_S)
        backlog_while_down = (await agent.health())["spool"]["backlog"]
        down.clear()
        worker = Worker(stores.env(), port, tmp_path / "worker-2.log")
        await worker.wait_ready()
        await asyncio.sleep(2)
        stop.set()
        await app
        await drained(agent)
    finally:
        stop.set()
        agent.terminate()
        worker.terminate()

    print(f"outcomes {dict(outcomes)}; {len(acknowledged)} events acknowledged")  # for the docs
    assert outcomes["down:local:200:agent:True"] > 50, outcomes
    assert [k for k in outcomes if k.startswith("down:local:")] == ["down:local:200:agent:True"]
    assert [k for k in outcomes if k.startswith("down:remote:")] == ["down:remote:503:none"]
    assert outcomes["up:remote:200:upstream"] > 0, outcomes
    assert backlog_while_down > 50

    assert len(set(acknowledged)) == len(acknowledged) > 100
    assert await service.scalar(IDS, source=source) == len(acknowledged)
    assert await service.scalar(COUNTED, customer=customer) == 3 * len(acknowledged)


async def test_the_agent_sigkilled_with_a_spool_backlog_delivers_it_after_restart_once(
    service: Service, stores: Stores, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    source = f"agent-kill-{uuid.uuid4().hex[:8]}"
    upstream_port, agent_port = free_port(), free_port()
    worker = Worker(stores.env(), upstream_port, tmp_path / "worker-1.log")
    await worker.wait_ready()
    spool = tmp_path / "spool"
    agent = AgentProcess(
        worker.base_url, service.key, spool, tmp_path / "agent.log", port=agent_port
    )
    try:
        await agent.wait_ready()
        # 1. The upstream down: 300 events acknowledged (spooled), then the agent killed.
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
            for first in range(0, 300, 30):
                batch = [event(customer, source, n) for n in range(first, first + 30)]
                answer = await http.post("/v1/events", json=batch)
                assert answer.status_code == 202 and answer.json()["spooled"] == 30
        assert (await agent.health())["spool"]["backlog"] == 300
        agent.kill()
        agent.start()
        await agent.wait_ready()
        assert (await agent.health())["spool"]["backlog"] == 300  # survived SIGKILL
        worker = Worker(stores.env(), upstream_port, tmp_path / "worker-2.log")
        await worker.wait_ready()
        await drained(agent)
        assert await service.scalar(IDS, source=source) == 300

        # 2. The upstream up, events flowing: the agent killed mid-delivery, restarted.
        acknowledged: list[int] = []
        stop = threading.Event()

        def application() -> None:
            n = 300
            with httpx.Client(base_url=agent.url, timeout=5) as http:
                while not stop.is_set():
                    batch = [event(customer, source, n + i) for i in range(20)]
                    try:
                        answer = http.post("/v1/events", json=batch)
                    except httpx.HTTPError:
                        time.sleep(0.05)  # the agent is down: this batch was not acknowledged
                    else:
                        if answer.status_code == 202:
                            acknowledged.extend(range(n, n + 20))
                    n += 20

        app = asyncio.create_task(asyncio.to_thread(application))
        await asyncio.sleep(1.5)
        agent.kill()
        await asyncio.sleep(0.5)
        agent.start()
        await agent.wait_ready()
        await asyncio.sleep(1.5)
        stop.set()
        await app
        await drained(agent)
    finally:
        agent.terminate()
        worker.terminate()

    print(f"{len(acknowledged)} acknowledged mid-delivery")  # for the docs
    assert len(acknowledged) > 100
    counted_ids = await service.scalar(IDS, source=source)
    # Every acknowledged event is there; a batch cut off by the kill may be too (the
    # agent spooled it but could not answer), never twice.
    assert counted_ids >= 300 + len(acknowledged)
    marks = "SELECT count(*) FROM usage_event_ids WHERE source = :source AND id = ANY(:ids)"
    ids = [f"e-{n}" for n in acknowledged]
    assert await service.scalar(marks, source=source, ids=ids) == len(acknowledged)
    assert await service.scalar(COUNTED, customer=customer) == 3 * counted_ids


async def test_restarted_while_the_upstream_is_down_the_agent_answers_from_kept_artifacts(
    service: Service, stores: Stores, tmp_path: Path
) -> None:
    customer, _ = await service.customer(plan="team")
    port = free_port()
    worker = Worker(stores.env(), port, tmp_path / "worker.log")
    await worker.wait_ready()
    spool = tmp_path / "spool"
    agent = AgentProcess(
        worker.base_url, service.key, spool, tmp_path / "agent.log", port=free_port()
    )
    try:
        await agent.wait_ready()
        await warm(agent, customer)
        started = time.monotonic()
        while not (spool / "artifacts" / f"{customer}.jws").exists():
            assert time.monotonic() - started < 10, "the artifact was never kept"
            await asyncio.sleep(0.05)
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        agent.kill()
        agent.start()
        await agent.wait_ready()
        async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
            reports = await http.post(
                "/v1/check", json={"customer": customer, "feature": "reports"}
            )
            assert reports.status_code == 200
            assert reports.headers["allotment-decided-by"] == "agent"
            assert reports.json()["allowed"] is True
            seat = await http.post(
                "/v1/check", json={"customer": customer, "feature": "editor", "subject": "ann"}
            )
            assert seat.status_code == 503  # needs the upstream: never answered otherwise
            other, _ = await service.customer(plan="team")  # never seen: nothing to answer from
            unknown = await http.post("/v1/check", json={"customer": other, "feature": "reports"})
            assert unknown.status_code == 503
        # A tampered artifact is not used after the next restart.
        kept = spool / "artifacts" / f"{customer}.jws"
        head, body, signature = kept.read_text().split(".")
        kept.write_text(".".join([head, body, signature[::-1]]))
        agent.kill()
        agent.start()
        await agent.wait_ready()
        async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
            again = await http.post("/v1/check", json={"customer": customer, "feature": "reports"})
            assert again.status_code == 503
        assert not kept.exists()
    finally:
        agent.terminate()
        worker.terminate()
