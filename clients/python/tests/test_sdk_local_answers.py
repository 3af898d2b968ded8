"""Local answers agree with the service's: invalid feature names are the same 422, a local
decision carries the artifact's contract revision, and the OpenFeature provider names the
error a caller made (context, type) rather than a general failure."""

from __future__ import annotations

import asyncio

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from allotment_client import Allotment, AsyncAllotment
from allotment_client.errors import ValidationError
from allotment_client.openfeature import AllotmentProvider
from conftest import Service


async def test_invalid_feature_names_are_the_services_422_in_local_mode(service: Service) -> None:
    customer, _ = await service.customer(plan="team")

    def errors(local: bool) -> list[tuple[str, object, object, object]]:
        out = []
        with Allotment(service.url, service.key, local=local, spool=False) as sdk:
            assert sdk.check(customer, "reports").local is local
            for name in ("No-Such", "", "x" * 64):
                with pytest.raises(ValidationError) as caught:
                    sdk.check(customer, name)
                exc = caught.value
                out.append((exc.detail, exc.type, exc.status, exc.errors))
        return out

    remote = await asyncio.to_thread(errors, False)
    assert await asyncio.to_thread(errors, True) == remote
    async with AsyncAllotment(service.url, service.key, local=True, spool=False) as sdk:
        assert (await sdk.check(customer, "reports")).local
        with pytest.raises(ValidationError) as caught:
            await sdk.check(customer, "No-Such")
        assert caught.value.errors == remote[0][3]


async def test_local_decisions_carry_the_contract_revision(service: Service) -> None:
    customer, contract = await service.customer(plan="team")
    revision = contract["revision"]

    def scenario() -> None:
        with Allotment(service.url, service.key, local=True, spool=False) as sdk:
            for feature in ("reports", "sso", "teleport"):
                decision = sdk.check(customer, feature)
                assert decision.local, feature
                assert decision.contract_revision == revision, feature
            api.set_provider(AllotmentProvider(sdk))
            details = api.get_client().get_boolean_details(
                "reports", False, EvaluationContext(attributes={"customer": customer})
            )
            assert details.flag_metadata["contract_revision"] == revision

    await asyncio.to_thread(scenario)


async def test_openfeature_names_context_and_type_errors(service: Service) -> None:
    customer, _ = await service.customer(plan="team")

    def scenario(local: bool) -> None:
        sdk = Allotment(service.url, service.key, local=local, stream=False, spool=False)
        api.set_provider(AllotmentProvider(sdk))
        flags = api.get_client()
        acme = EvaluationContext(attributes={"customer": customer})
        ghost = flags.get_boolean_details(
            "reports", False, EvaluationContext(attributes={"customer": "Ghost Co"})
        )
        assert ghost.error_code == ErrorCode.INVALID_CONTEXT, ghost
        integer = flags.get_integer_details("sso", 3, acme)
        assert (integer.value, integer.error_code) == (3, ErrorCode.TYPE_MISMATCH)
        boolean = flags.get_boolean_details("api_calls.limit", True, acme)
        assert (boolean.value, boolean.error_code) == (True, ErrorCode.TYPE_MISMATCH)
        missing = flags.get_integer_details("teleport.limit", 7, acme)
        assert missing.error_code == ErrorCode.FLAG_NOT_FOUND
        api.shutdown()

    for local in (False, True):
        await asyncio.to_thread(scenario, local)


async def test_a_local_decisions_limit_is_the_services_document(service: Service) -> None:
    customer, _ = await service.customer(plan="team")

    def limits() -> tuple[object, object]:
        with Allotment(service.url, service.key, spool=False) as remote:
            served = remote.check(customer, "exports")
        with Allotment(service.url, service.key, local=True, spool=False) as sdk:
            local = sdk.check(customer, "exports")
        assert local.local and not served.local
        return dict(local.limit or {}), dict(served.limit or {})

    local, served = await asyncio.to_thread(limits)
    assert local == served
