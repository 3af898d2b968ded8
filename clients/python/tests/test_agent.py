"""The sidecar agent against the real service: checks, batches and OFREP flags answered from
artifacts where they decide (and only there), the rest forwarded; events spooled and
delivered once; a revocation followed; an artifact never used past `grace_until` nor on
another machine. The agent runs as its own process (`allotment agent ...`), except where a
test must move its clock."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_process import AgentProcess
from tests.check.servers import free_port

from allotment_client.agent.app import Agent
from allotment_client.agent.settings import AgentSettings
from allotment_client.artifacts import SKEW_S
from conftest import GRACE_S, Service

StartAgent = Callable[..., AgentProcess]


@pytest.fixture
async def start_agent(service: Service, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[AgentProcess] = []

    async def start(*options: str) -> AgentProcess:
        n = len(started)
        agent = AgentProcess(
            service.url,
            service.key,
            tmp_path / f"spool-{n}",
            tmp_path / f"agent-{n}.log",
            *options,
            port=free_port(),
        )
        started.append(agent)
        await agent.wait_ready()
        return agent

    yield start
    for agent in started:
        agent.terminate()


async def decided_locally(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], within: float = 10.0
) -> httpx.Response:
    """Ask until the agent answers from an artifact (the first ask of a customer is
    forwarded while its artifact is fetched)."""
    started = time.monotonic()
    while True:
        answer = await http.post(path, json=body)
        if answer.headers.get("allotment-decided-by") == "agent":
            return answer
        assert answer.status_code < 500, answer.text
        assert time.monotonic() - started < within, f"never decided locally: {answer.text}"
        await _sleep(0.02)


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_checks_are_answered_from_the_artifact_and_forwarded_when_it_cannot_decide(
    service: Service, start_agent: Any
) -> None:
    customer, _ = await service.customer(plan="team")
    agent = await start_agent()
    async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
        reports = await decided_locally(
            http, "/v1/check", {"customer": customer, "feature": "reports"}
        )
        document = reports.json()
        assert reports.status_code == 200
        assert (document["allowed"], document["reason"], document["decided_by"]) == (
            True,
            "ok",
            "agent",
        )
        assert document["decision_id"] is None and document["contract_revision"] == 1

        # The service's own answer to the same check has the same shape and verdict.
        upstream = await service.admin.post(
            "/v1/check",
            json={"customer": customer, "feature": "reports"},
            headers=service.admin_headers,
        )
        assert set(upstream.json()) | {"decided_by"} == set(document)
        assert upstream.json()["allowed"] is True

        by: dict[str, tuple[str | None, Any]] = {}
        for name, body in {
            "not_in_plan": {"feature": "sso"},
            "unknown": {"feature": "teleport"},
            "soft_meter": {"feature": "exports"},
            "seat_no_subject": {"feature": "editor"},
            "seat_subject": {"feature": "editor", "subject": "ann"},
            "hard_meter": {"feature": "api"},
            "tenant": {"feature": "reports", "tenant": "t-1"},
            "consume": {"feature": "exports", "consume": 1},
        }.items():
            answer = await http.post("/v1/check", json={"customer": customer, **body})
            assert answer.status_code == 200, answer.text
            by[name] = (answer.headers.get("allotment-decided-by"), answer.json()["reason"])
        assert by == {
            "not_in_plan": ("agent", "feature_not_in_plan"),
            "unknown": ("agent", "feature_unknown"),
            "soft_meter": ("agent", "ok"),
            "seat_no_subject": ("agent", "seat_required"),
            "seat_subject": ("upstream", "seat_required"),
            "hard_meter": ("upstream", "ok"),
            "tenant": ("upstream", "tenant_unknown"),
            "consume": ("upstream", "ok"),
        }

        batch = await http.post(
            "/v1/check/batch",
            json={"customer": customer, "features": ["reports", "sso", "exports"]},
        )
        assert batch.headers["allotment-decided-by"] == "agent"
        assert [d["reason"] for d in batch.json()["decisions"]] == [
            "ok",
            "feature_not_in_plan",
            "ok",
        ]
        curl = await http.post(  # `curl -d` labels JSON form-urlencoded: still forwarded as JSON
            "/v1/check",
            content=b'{"customer": "%s", "feature": "editor", "subject": "bo"}' % customer.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (curl.status_code, curl.headers["allotment-decided-by"]) == (200, "upstream")
        mixed = await http.post(
            "/v1/check/batch",
            json={"customer": customer, "features": ["reports", "api"]},
        )
        assert mixed.headers["allotment-decided-by"] == "upstream"
        assert [d["decision_id"] is not None for d in mixed.json()["decisions"]] == [True, True]

        # Bad input: problem documents, never a 500.
        for body, status in [
            (b"{", 400),
            (b"[]", 422),
            (b'{"customer": "Not A Key", "feature": "reports"}', 422),
            (b'{"customer": "acme", "feature": "reports", "extra": 1}', 422),
            (b'{"customer": "acme", "feature": "reports", "consume": true}', 422),
            (b'{"customer": "acme", "features": []}', 422),
        ]:
            path = "/v1/check/batch" if b"features" in body else "/v1/check"
            answer = await http.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == status, (body, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
        assert (await http.get("/v1/check")).status_code == 405
        assert (await http.get("/nowhere")).status_code == 404

        metrics = (await http.get("/metrics")).text
        assert 'allotment_agent_decisions_total{by="agent",endpoint="check"}' in metrics
        health = await agent.health()
        assert health["artifacts"]["usable"] >= 1 and health["upstream"]["url"] == service.url
        assert health["upstream"]["last_error"] is None


async def test_ofrep_flags_are_evaluated_locally_and_limits_forwarded(
    service: Service, start_agent: Any
) -> None:
    customer, _ = await service.customer(plan="team")
    agent = await start_agent()
    context = {"context": {"customer": customer}}
    async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
        flag = await decided_locally(http, "/ofrep/v1/evaluate/flags/reports", context)
        assert flag.json()["value"] is True and flag.json()["variant"] == "on"
        assert flag.json()["metadata"]["decided_by"] == "agent"
        denied = await http.post("/ofrep/v1/evaluate/flags/sso", json=context)
        assert (denied.json()["reason"], denied.json()["metadata"]["reason"]) == (
            "DISABLED",
            "feature_not_in_plan",
        )
        missing = await http.post("/ofrep/v1/evaluate/flags/teleport", json=context)
        assert missing.status_code == 404 and missing.json()["errorCode"] == "FLAG_NOT_FOUND"
        seat = await http.post("/ofrep/v1/evaluate/flags/editor", json=context)
        assert seat.status_code == 400 and seat.json()["errorCode"] == "TARGETING_KEY_MISSING"
        limit = await http.post("/ofrep/v1/evaluate/flags/api_calls.limit", json=context)
        assert limit.headers["allotment-decided-by"] == "upstream"
        assert limit.json()["value"] == 100000
        bulk = await http.post("/ofrep/v1/evaluate/flags", json=context)
        assert bulk.status_code == 200 and bulk.headers["etag"]
        assert (await http.post("/ofrep/v1/evaluate/flags/reports", content=b"{")).json()[
            "errorCode"
        ] == "PARSE_ERROR"
        no_customer = await http.post("/ofrep/v1/evaluate/flags/reports", json={"context": {}})
        assert no_customer.status_code == 400
        assert no_customer.json()["errorCode"] == "INVALID_CONTEXT"


async def test_events_in_every_content_mode_are_spooled_then_counted_once(
    service: Service, start_agent: Any
) -> None:
    customer, _ = await service.customer(plan="team")
    agent = await start_agent()
    source = f"agent-{uuid.uuid4().hex[:8]}"

    def event(n: int) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": f"e-{n}",
            "source": source,
            "type": "api.call",
            "subject": customer,
            "data": {"count": 2},
        }

    async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
        single = await http.post(
            "/v1/events", json=event(0), headers={"Content-Type": "application/cloudevents+json"}
        )
        assert single.status_code == 202 and single.json() == {"spooled": 1, "rejected": []}
        batch = [event(n) for n in range(1, 11)] + [{"id": "no-source"}, event(3)]
        answer = await http.post(
            "/v1/events",
            content=httpx.Request("POST", "/", json=batch).content,
            headers={"Content-Type": "application/cloudevents-batch+json"},
        )
        assert answer.status_code == 202
        assert answer.json()["spooled"] == 10
        assert [r["index"] for r in answer.json()["rejected"]] == [10]
        binary = await http.post(
            "/v1/events",
            json={"count": 2},
            headers={
                "ce-specversion": "1.0",
                "ce-id": "e-11",
                "ce-source": source,
                "ce-type": "api.call",
                "ce-subject": customer,
            },
        )
        assert binary.status_code == 202, binary.text
        # Sent again (a caller's retry): the upstream's dedupe makes it a duplicate.
        again = await http.post("/v1/events", json=[event(n) for n in range(0, 12)])
        assert again.status_code == 202 and again.json()["spooled"] == 12

        for body, headers, status in [
            (b"{", {"Content-Type": "application/json"}, 400),
            (b'{"id": "x"}', {"Content-Type": "application/cloudevents+json"}, 422),
            (b"[]", {"Content-Type": "application/cloudevents+json"}, 422),
            (b"x", {"Content-Type": "application/xml"}, 415),
            (b"{}", {"ce-id": "x", "Content-Type": "application/json"}, 422),
        ]:
            bad = await http.post("/v1/events", content=body, headers=headers)
            assert bad.status_code == status, (body, bad.text)

        started = time.monotonic()
        while (await agent.health())["spool"]["backlog"]:
            assert time.monotonic() - started < 30, await agent.health()
            await _sleep(0.05)
    ids = "SELECT count(*) FROM usage_event_ids WHERE source = :source"
    assert await service.scalar(ids, source=source) == 12
    counted = (
        "SELECT coalesce(sum(c.value), 0) FROM usage_counters c JOIN customers k "
        "ON k.id = c.customer_id WHERE k.key = :customer AND c.meter = 'api_calls'"
    )
    assert await service.scalar(counted, customer=customer) == 24


async def test_a_revoking_amendment_reaches_the_agent(service: Service, start_agent: Any) -> None:
    customer, contract = await service.customer(plan="team")
    agent = await start_agent()
    body = {"customer": customer, "feature": "reports"}
    async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
        assert (await decided_locally(http, "/v1/check", body)).json()["allowed"]
        started = time.monotonic()
        while not (await agent.health())["stream_connected"]:
            assert time.monotonic() - started < 10
            await _sleep(0.05)
        revoke = {"feature": "reports", "action": "revoke", "reason": "test"}
        await service.amend(contract, overrides=[revoke])
        started = time.monotonic()
        while (answer := await http.post("/v1/check", json=body)).json()["allowed"]:
            assert time.monotonic() - started < 10, "the revocation never reached the agent"
            await _sleep(0.01)
        print(f"revocation seen by the agent {time.monotonic() - started:.3f} s after the PATCH")
        assert answer.headers["allotment-decided-by"] == "agent"
        assert answer.json()["reason"] == "feature_not_in_plan"


async def test_an_artifact_is_never_used_past_grace_until(service: Service, tmp_path: Path) -> None:
    customer, _ = await service.customer(plan="team")
    offset = 0.0
    agent = Agent(
        AgentSettings(upstream=service.url, key=service.key, spool=tmp_path / "spool"),
        clock=lambda: time.time() + offset,
    )
    await agent.startup()
    transport = httpx.ASGITransport(app=agent)
    body = {"customer": customer, "feature": "reports"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
            await decided_locally(http, "/v1/check", body)
            assert agent.cache is not None
            artifact = agent.cache.get(customer)
            assert artifact is not None and artifact.grace_until == artifact.expires_at + GRACE_S

            offset = artifact.expires_at + SKEW_S + 60 - time.time()  # in its grace period
            graced = await http.post("/v1/check", json=body)
            assert graced.headers["allotment-decided-by"] == "agent"
            assert graced.json()["allowed"] and "grace_period" in graced.json()["warnings"]

            offset = artifact.grace_until + SKEW_S + 1 - time.time()  # past grace_until
            past = await http.post("/v1/check", json=body)
            assert past.headers["allotment-decided-by"] == "upstream"
            assert (await http.post("/v1/check", json={**body, "feature": "sso"})).headers[
                "allotment-decided-by"
            ] == "upstream"

            # The upstream gone too: nothing may answer, so 503, never the expired artifact.
            assert agent.upstream is not None
            await agent.upstream.http.aclose()
            agent.upstream.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}")
            down = await http.post("/v1/check", json=body)
            assert down.status_code == 503
            assert down.headers["content-type"] == "application/problem+json"
            flag = await http.post(
                "/ofrep/v1/evaluate/flags/reports", json={"context": {"customer": customer}}
            )
            assert flag.status_code == 429 and flag.headers["retry-after"] == "1"
    finally:
        await agent.shutdown()


async def test_a_machine_bound_artifact_is_used_on_its_machine_only(
    service: Service, start_agent: Any
) -> None:
    customer, _ = await service.customer(plan="enterprise")
    registered = await service.admin.post(
        f"/v1/customers/{customer}/instances",
        json={"fingerprint": "host-a", "kind": "vm"},
        headers=service.admin_headers,
    )
    assert registered.status_code == 201, registered.text
    on_a = await start_agent("--fingerprint", "host-a")
    on_b = await start_agent("--fingerprint", "host-b")
    check = {"customer": customer, "feature": "agent"}
    async with httpx.AsyncClient(timeout=10) as http:
        http.base_url = httpx.URL(on_a.url)
        here = await decided_locally(http, "/v1/check", {**check, "instance": "host-a"})
        assert here.json()["allowed"] is True
        elsewhere = await http.post("/v1/check", json={**check, "instance": "host-b"})
        assert elsewhere.headers["allotment-decided-by"] == "upstream"
        assert elsewhere.json()["reason"] == "instance_unknown"

        # An agent on another machine holds the customer-level artifact, never host-a's.
        http.base_url = httpx.URL(on_b.url)
        await decided_locally(http, "/v1/check", {"customer": customer, "feature": "reports"})
        for instance in ("host-a", "host-b"):
            answer = await http.post("/v1/check", json={**check, "instance": instance})
            assert answer.headers["allotment-decided-by"] == "upstream", instance


async def test_a_caller_key_is_required_when_set_and_bad_input_is_never_a_500(
    service: Service, start_agent: Any
) -> None:
    customer, _ = await service.customer(plan="team")
    agent = await start_agent("--caller-key", "s3cret")
    body = {"customer": customer, "feature": "reports"}
    async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
        refused = await http.post("/v1/check", json=body)
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        wrong = await http.post("/v1/check", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        flag = await http.post("/ofrep/v1/evaluate/flags/reports", json={"context": body})
        assert (flag.status_code, flag.content) == (401, b"")
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.post("/v1/check", json=body, headers={"X-API-Key": "s3cret"})).is_success
        http.headers["Authorization"] = "Bearer s3cret"
        await decided_locally(http, "/v1/check", body)

        hostile = [
            b"",
            b"null",
            b"\xff\xfe",
            b'{"customer": 1, "feature": []}',
            b'{"customer": "a", "feature": "reports", "context": []}',
            b'{"customer": "a", "feature": "reports", "subject": "' + b"x" * 300 + b'"}',
            b'{"customer": "a", "feature": "reports", "subject": "a\\u0000b"}',
            b'{"context": {"customer": 7, "targetingKey": ["x"]}}',
            b"[" * 10_000,
            b"x" * 2_000_000,
        ]
        paths = ["/v1/check", "/v1/check/batch", "/v1/events", "/ofrep/v1/evaluate/flags/reports"]
        for path in paths:
            for content in hostile:
                for content_type in (
                    "application/json",
                    "text/plain",
                    "application/cloudevents+json",
                ):
                    answer = await http.post(
                        path, content=content, headers={"Content-Type": content_type}
                    )
                    assert 400 <= answer.status_code < 500, (path, content[:40], answer.text)
        binary = await http.post(
            "/v1/events",
            content=b"{}",
            headers={"ce-specversion": "1.0", "ce-id": "r%FF", "Content-Type": "application/json"},
        )
        assert binary.status_code == 422 and "percent" in binary.text


async def test_a_refused_agent_key_shows_in_health(service: Service, tmp_path: Path) -> None:
    agent = AgentProcess(
        service.url, "alm_not_a_key", tmp_path / "spool", tmp_path / "agent.log", port=free_port()
    )
    try:
        await agent.wait_ready()
        async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
            answer = await http.post("/v1/check", json={"customer": "acme", "feature": "reports"})
        assert (answer.status_code, answer.headers["allotment-decided-by"]) == (401, "upstream")
        health = await agent.health()
        assert health["upstream"]["last_error"] == "/v1/check: 401"
        assert health["status"] == "degraded"  # the stream is refused too
    finally:
        agent.terminate()


async def test_a_refused_agent_key_is_a_warning_and_probes_are_not_logged(
    service: Service, tmp_path: Path
) -> None:
    log_path = tmp_path / "agent.log"
    agent = AgentProcess(
        service.url, "alm_not_a_key", tmp_path / "spool", log_path, port=free_port()
    )
    try:
        await agent.wait_ready()
        async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
            for _ in range(3):
                answer = await http.post(
                    "/v1/check", json={"customer": "acme", "feature": "reports"}
                )
                assert answer.status_code == 401
        await _sleep(4.5)  # two upstream probes at least
    finally:
        agent.terminate()
    lines = log_path.read_text().splitlines()
    refused = [line for line in lines if "refused the agent's key" in line]
    assert len(refused) == 1 and '"level": "warning"' in refused[0], lines
    assert not [line for line in lines if "/healthz" in line and '"level": "info"' in line], lines


async def test_events_with_a_time_the_service_refuses_are_rejected_not_spooled(
    service: Service, start_agent: Any
) -> None:
    customer, _ = await service.customer(plan="team")
    agent = await start_agent()
    base = {"specversion": "1.0", "source": "agent-time", "type": "api.call", "subject": customer}
    batch = [
        {**base, "id": "t-0", "time": "yesterday"},
        {**base, "id": "t-1", "time": "2026-11-29T10:00:00"},  # no offset
        {**base, "id": "t-2", "tenant": ""},
        {**base, "id": "t-3"},
    ]
    async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
        answer = await http.post(
            "/v1/events",
            content=httpx.Request("POST", "/", json=batch).content,
            headers={"Content-Type": "application/cloudevents-batch+json"},
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["spooled"] == 1
        rejected = answer.json()["rejected"]
        assert [(r["index"], r["errors"][0]["path"]) for r in rejected] == [
            (0, "time"),
            (1, "time"),
            (2, "tenant"),
        ]
        single = await http.post(
            "/v1/events",
            json={**base, "id": "t-4", "time": "yesterday"},
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert single.status_code == 422, single.text


async def test_customers_the_service_does_not_know_are_not_held_nor_refetched(
    service: Service, start_agent: Any
) -> None:
    customer, _ = await service.customer(plan="team")
    agent = await start_agent("--max-customers", "3")
    ghosts = [f"ghost-{uuid.uuid4().hex[:8]}-{n}" for n in range(10)]
    async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
        for ghost in ghosts:
            answer = await http.post("/v1/check", json={"customer": ghost, "feature": "reports"})
            assert answer.status_code == 200 and answer.json()["reason"] == "customer_unknown"
        await _sleep(1.0)  # the fetches answered 404
        for ghost in ghosts:  # forwarded, not fetched again
            answer = await http.post("/v1/check", json={"customer": ghost, "feature": "reports"})
            assert answer.json()["reason"] == "customer_unknown"
            assert answer.headers.get("allotment-decided-by") != "agent"
        health = (await http.get("/healthz")).json()
        assert health["artifacts"]["customers"] == 0, health
        # Ghosts take no place under --max-customers: a real customer is still held.
        reports = await decided_locally(
            http, "/v1/check", {"customer": customer, "feature": "reports"}
        )
        assert reports.json()["allowed"] is True
        assert (await http.get("/healthz")).json()["artifacts"]["customers"] == 1


async def test_health_and_metrics_count_acknowledged_apart_from_refused(
    service: Service, start_agent: Any
) -> None:
    customer, _ = await service.customer(plan="team")
    agent = await start_agent()
    source = f"agent-{uuid.uuid4().hex[:8]}"
    batch = [
        {
            "specversion": "1.0",
            "id": f"e-{n}",
            "source": source,
            "type": "api.call",
            "subject": customer if n < 8 else f"nobody-{uuid.uuid4().hex[:8]}",
            "data": {"count": 1},
        }
        for n in range(12)
    ]
    async with httpx.AsyncClient(base_url=agent.url, timeout=10) as http:
        health = (await http.get("/healthz")).json()
        assert health["spool"]["directory"] is not None, health  # even with nothing waiting
        answer = await http.post(
            "/v1/events",
            content=httpx.Request("POST", "/", json=batch).content,
            headers={"Content-Type": "application/cloudevents-batch+json"},
        )
        assert answer.status_code == 202 and answer.json()["spooled"] == 12
        started = time.monotonic()
        while True:
            health = (await http.get("/healthz")).json()
            if health["events"]["delivered"] + health["events"]["refused"] >= 12:
                break
            assert time.monotonic() - started < 30, health
            await _sleep(0.1)
        assert health["events"] == {"delivered": 8, "refused": 4}, health
        assert health["spool"]["directory"] is not None and health["spool"]["backlog"] == 0
        page = (await http.get("/metrics")).text
        assert 'allotment_agent_events_delivered_total{result="acknowledged"} 8.0' in page
        assert 'allotment_agent_events_delivered_total{result="refused"} 4.0' in page
