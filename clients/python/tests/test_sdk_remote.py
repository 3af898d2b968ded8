"""The whole product-backend API through both clients, against the real service."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tests.check.servers import free_port

from allotment_client import (
    Allotment,
    AsyncAllotment,
    Conflict,
    NotFound,
    RetryPolicy,
    Unauthorized,
    Unreachable,
    ValidationError,
    _calls,
)
from conftest import Service, fresh_key


async def test_checks_seats_instances_and_errors_through_the_async_client(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="team")
    async with AsyncAllotment(service.url, service.key, spool=False) as allotment:
        assert (await allotment.check(customer, "reports")).allowed
        sso = await allotment.check(customer, "sso")
        assert (sso.allowed, sso.reason) == (False, "feature_not_in_plan")
        assert sso.decision_id and not sso.local

        batch = await allotment.check_batch(customer, ["reports", "sso", "teleport"])
        assert [(d.feature, d.reason) for d in batch] == [
            ("reports", "ok"),
            ("sso", "feature_not_in_plan"),
            ("teleport", "feature_unknown"),
        ]
        document = await allotment.entitlements(customer)
        assert {f["feature"] for f in document["features"]} >= {"reports", "editor", "agent"}

        assert (await allotment.check(customer, "editor", subject="ann")).reason == "seat_required"
        seat = await allotment.assign_seat(customer, "ann")
        assert seat["subject"] == "ann"
        assert (await allotment.check(customer, "editor", subject="ann")).allowed
        assert [s["subject"] for s in (await allotment.seats(customer))["items"]] == ["ann"]
        await allotment.release_seat(customer, "ann")
        assert not (await allotment.check(customer, "editor", subject="ann")).allowed

        big, _ = await service.customer(plan="enterprise")
        instance = await allotment.register_instance(big, "host-1", kind="vm")
        assert (await allotment.check(big, "agent", instance="host-1")).allowed
        renewed = await allotment.renew_instance(instance["id"])
        assert renewed["lease_expires_at"] >= instance["lease_expires_at"]
        assert len((await allotment.instances(big))["items"]) == 1
        await allotment.deregister_instance(instance["id"])
        gone = await allotment.check(big, "agent", instance="host-1")
        assert gone.reason == "instance_unknown"

        floating, _ = await service.customer(plan="floating")
        session = await allotment.open_session(floating, "bob")
        assert (await allotment.check(floating, "editor", subject="bob")).allowed
        assert (await allotment.renew_session(session["id"]))["id"] == session["id"]
        await allotment.close_session(session["id"])
        assert not (await allotment.check(floating, "editor", subject="bob")).allowed

        with pytest.raises(NotFound) as missing:
            await allotment.assign_seat(fresh_key(), "ann")
        assert missing.value.status == 404 and missing.value.type == "customer-not-found"
        with pytest.raises(ValidationError) as invalid:
            await allotment.check("Not A Key!", "reports")
        assert invalid.value.errors and invalid.value.errors[0]["path"]
        with pytest.raises(ValidationError):
            await allotment.register_instance(big, "host-2", kind="teleporter")
        with pytest.raises(Conflict) as conflict:
            await allotment._send(_calls.artifact(big, fingerprint="host-nowhere"))
        assert (conflict.value.status, conflict.value.type) == (409, "instance-not-live")

    async with AsyncAllotment(service.url, "alm_not-a-key", spool=False) as stranger:
        with pytest.raises(Unauthorized):
            await stranger.check(customer, "reports")


async def test_a_retried_consume_sends_the_same_idempotency_key_and_counts_once(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="team")
    async with AsyncAllotment(service.url, service.key, spool=False) as allotment:
        call = _calls.check(customer, "api", consume=7)
        first = await allotment._send(call)
        again = await allotment._send(call)  # as a retry after a lost answer would
        assert first.allowed and first.limit is not None
        assert again.decision_id == first.decision_id
        assert again.limit == first.limit
        other = await allotment.consume(customer, "api", 1)
        assert other.limit is not None and other.limit["used"] == 8


class LoseFirstAnswers(httpx.BaseTransport):
    """A network that delivers the first `n` requests to the real service and then loses
    their answers (a read error): what a client sees when a connection drops mid-answer."""

    def __init__(self, n: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.left = n
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("Idempotency-Key"))
        response = self.inner.handle_request(request)
        if self.left > 0:
            self.left -= 1
            response.read()
            response.close()
            raise httpx.ReadError("connection reset while reading the answer", request=request)
        return response


async def test_a_write_whose_answer_was_lost_is_retried_with_its_key_and_done_once(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="team")

    def scenario() -> tuple[list[str | None], dict[str, Any], dict[str, Any]]:
        lossy = LoseFirstAnswers(2)
        retry = RetryPolicy(attempts=4, backoff=0.01)
        with Allotment(
            service.url, service.key, spool=False, retry=retry, transport=lossy
        ) as allotment:
            consumed = allotment.consume(customer, "api", 5)  # delivered 3 times, answered once
            assert consumed.limit is not None
            with Allotment(service.url, service.key, spool=False) as plain:
                after = plain.consume(customer, "api", 1)
            assert after.limit is not None
            return lossy.keys, dict(consumed.limit), dict(after.limit)

    keys, consumed, after = await asyncio.to_thread(scenario)
    assert len(keys) == 3 and keys[0] is not None and len(set(keys)) == 1
    assert consumed["used"] == 5 and after["used"] == 6  # consumed once, not three times


async def test_the_sync_client_and_its_instance_heartbeat(service: Service) -> None:
    customer, _ = await service.customer(plan="enterprise")

    def scenario() -> tuple[str, str]:
        with Allotment(service.url, service.key, spool=False) as allotment:
            assert allotment.check(customer, "reports").allowed
            with allotment.hold_instance(customer, "host-9", kind="vm") as lease:
                assert not lease.lost.is_set()
                assert allotment.check(customer, "agent", instance="host-9").allowed
                first = lease.instance["lease_expires_at"]
                renewed = allotment.renew_instance(lease.id)["lease_expires_at"]
            after = allotment.check(customer, "agent", instance="host-9")
            assert after.reason == "instance_unknown"  # released: deregistered
            return first, renewed

    first, renewed = await asyncio.to_thread(scenario)
    assert renewed >= first


def test_an_unreachable_service_is_retried_then_raised() -> None:
    port = free_port()  # nothing listens there
    retry = RetryPolicy(attempts=3, backoff=0.01)
    url = f"http://127.0.0.1:{port}"
    with (
        Allotment(url, "alm_x", spool=False, retry=retry) as allotment,
        pytest.raises(Unreachable) as caught,
    ):
        allotment.check("acme", "reports")
    assert caught.value.status is None and "ConnectError" in str(caught.value)


async def test_the_async_clients_hold_instance_is_an_async_context_manager(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="enterprise")
    async with AsyncAllotment(service.url, service.key, spool=False) as allotment:
        async with allotment.hold_instance(customer, "host-a", kind="vm") as lease:
            assert not lease.lost.is_set() and lease.id.startswith("ins_")
            assert (await allotment.check(customer, "agent", instance="host-a")).allowed
        after = await allotment.check(customer, "agent", instance="host-a")
        assert after.reason == "instance_unknown"  # released on leaving
        async with await allotment.hold_instance(customer, "host-b", kind="vm"):  # as before
            assert (await allotment.check(customer, "agent", instance="host-b")).allowed
        lease = await allotment.hold_instance(customer, "host-c", kind="vm")
        await lease.release()
        gone = await allotment.check(customer, "agent", instance="host-c")
        assert gone.reason == "instance_unknown"
