"""Properties of `local.decide()` (a pure function) on a real, machine-bound artifact: it
never answers outside the artifact's time or on another machine, never for `consume`, and
with a tenant only a denial that holds whatever the check names."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment_client import AsyncAllotment, KeySet, decide, verify
from allotment_client.artifacts import STATIC_DENIALS
from conftest import Service

FEATURES = ["reports", "editor", "agent", "api", "exports", "sso", "scim", "teleport"]


async def test_decide_answers_only_within_time_on_its_machine_and_without_live_inputs(
    service: Service,
) -> None:
    customer, _ = await service.customer(plan="enterprise")
    async with AsyncAllotment(service.url, service.key, spool=False) as sdk:
        await sdk.register_instance(customer, "node-1", kind="vm")
        token = await sdk.artifact_token(customer, fingerprint="node-1")
        keys = KeySet.from_jwks(await sdk.jwks())
    artifact = verify(token, keys, fingerprint="node-1", rules={})
    start, end = artifact.usable_from, artifact.usable_until

    @settings(max_examples=400, deadline=None)
    @given(
        feature=st.sampled_from(FEATURES) | st.text(max_size=8),
        subject=st.none() | st.sampled_from(["ann", "bob"]),
        instance=st.none() | st.sampled_from(["node-1", "node-2"]),
        tenant=st.none() | st.just("t1"),
        context=st.none() | st.just({"beta": True}),
        consume=st.none() | st.integers(1, 5),
        machine=st.none() | st.sampled_from(["node-1", "node-2"]),
        now=st.floats(start - 3600, end + 3600),
    )
    def prop(**check: Any) -> None:
        answer = decide(artifact, **check)
        if answer is None:
            return
        assert start <= check["now"] <= end
        assert check["machine"] == "node-1"
        assert not check["consume"]
        assert answer.local and answer.customer == customer
        if check["tenant"] is not None:
            assert not answer.allowed and answer.reason in STATIC_DENIALS
        if answer.allowed and check["feature"] == "agent":
            assert check["instance"] == "node-1"  # the bound machine, nothing else
        if answer.allowed and check["feature"] == "editor":
            raise AssertionError("a seat feature is never allowed without the service")

    prop()
