"""Allotment as an OpenFeature provider sees it: the real `openfeature-sdk` with the real
`openfeature-provider-ofrep`, against the service served over HTTP (uvicorn in the test's
event loop, tests/stream/conftest.py `serve`).

The provider is synchronous (requests), so each evaluation runs in a thread while the
server keeps the loop. Data is written through the session app (the same database, another
app instance, as another worker would) — except the revoke, which goes through the served
app so that the next evaluation must see it (read-your-writes on one worker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from tests.conftest import Stores
from tests.stream.conftest import Served, serve

DOMAIN = "allotment-tests"


@pytest.fixture(scope="module")
async def served(stores: Stores) -> AsyncIterator[Served]:
    async with serve(stores) as running:
        yield running


@pytest.fixture
async def flags(served: Served, team: str, backend: dict[str, str]) -> OpenFeatureClient:
    # Tables were emptied for this test: forget what the served app cached of the last one.
    served.app.state.checker.snapshots.clear()
    served.app.state.principals.clear()
    headers = dict(backend)
    provider = OFREPProvider(served.url, headers_factory=lambda: headers)
    api.set_provider(provider, domain=DOMAIN)
    return api.get_client(DOMAIN)


def acme(subject: str = "ann", **attributes: Any) -> EvaluationContext:
    return EvaluationContext(targeting_key=subject, attributes={"customer": "acme", **attributes})


async def evaluate(call: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(call, *args)


async def test_a_feature_is_a_boolean_flag_with_its_reason(flags: OpenFeatureClient) -> None:
    on = await evaluate(flags.get_boolean_details, "reports", False, acme())
    assert on.value is True and on.reason == Reason.TARGETING_MATCH and on.variant == "on"
    assert on.error_code is None
    assert on.flag_metadata["reason"] == "ok" and on.flag_metadata["decision_id"].startswith("dec_")
    off = await evaluate(flags.get_boolean_details, "sso", True, acme())
    assert off.value is False and off.reason == Reason.DISABLED and off.variant == "off"
    assert off.flag_metadata["reason"] == "feature_not_in_plan"


async def test_an_unknown_flag_is_the_default_with_flag_not_found(
    flags: OpenFeatureClient,
) -> None:
    details = await evaluate(flags.get_boolean_details, "teleport", True, acme())
    assert details.value is True  # the application's default
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND and details.reason == Reason.ERROR


async def test_a_missing_customer_is_invalid_context(flags: OpenFeatureClient) -> None:
    context = EvaluationContext(targeting_key="ann")
    details = await evaluate(flags.get_boolean_details, "reports", False, context)
    assert details.value is False
    assert details.error_code == ErrorCode.INVALID_CONTEXT
    assert "customer" in (details.error_message or "")


async def test_a_seat_feature_without_a_targeting_key_is_targeting_key_missing(
    flags: OpenFeatureClient,
) -> None:
    context = EvaluationContext(attributes={"customer": "acme"})
    details = await evaluate(flags.get_boolean_details, "editor", True, context)
    assert details.value is True and details.error_code == ErrorCode.TARGETING_KEY_MISSING


async def test_a_limit_is_an_integer_flag(flags: OpenFeatureClient) -> None:
    limit = await evaluate(flags.get_integer_details, "api_calls.limit", 0, acme())
    assert limit.value == 100000 and limit.reason == Reason.TARGETING_MATCH
    assert limit.error_code is None
    seats = await evaluate(flags.get_integer_value, "editor.remaining", 0, acme())
    assert seats == 10


async def test_a_limit_without_a_value_is_the_code_default_without_an_error(
    flags: OpenFeatureClient, app: Any, admin: dict[str, str], client: httpx.AsyncClient
) -> None:
    from tests.factories.customers import create_customer

    await create_customer(client, admin, key="initech")  # no contract
    context = EvaluationContext(attributes={"customer": "initech"})
    details = await evaluate(flags.get_integer_details, "api_calls.limit", 7, context)
    assert details.value == 7 and details.error_code is None  # the application's default
    assert details.reason == Reason.DISABLED
    assert details.flag_metadata["reason"] == "no_active_contract"


async def test_a_revoked_feature_is_seen_by_the_next_evaluation(
    flags: OpenFeatureClient, served: Served, admin: dict[str, str]
) -> None:
    assert await evaluate(flags.get_boolean_value, "reports", False, acme()) is True
    async with httpx.AsyncClient(base_url=served.url, headers=admin) as http:
        contract = (await http.get("/v1/customers/acme/contracts")).json()["items"][0]
        amended = await http.patch(
            f"/v1/contracts/{contract['id']}",
            json={"overrides": [{"feature": "reports", "action": "revoke", "reason": "abuse"}]},
            headers={"If-Match": str(contract["revision"])},
        )
        assert amended.status_code == 200, amended.text
    details = await evaluate(flags.get_boolean_details, "reports", True, acme())
    assert details.value is False and details.reason == Reason.DISABLED
    assert details.flag_metadata["reason"] == "feature_not_in_plan"


async def test_an_unknown_key_is_a_general_error(flags: OpenFeatureClient, served: Served) -> None:
    provider = OFREPProvider(served.url, headers_factory=lambda: {"X-API-Key": "alm_nope"})
    api.set_provider(provider, domain=DOMAIN + "-bad")
    bad = api.get_client(DOMAIN + "-bad")
    details = await evaluate(bad.get_boolean_details, "reports", False, acme())
    assert details.value is False and details.error_code == ErrorCode.GENERAL
    assert details.error_message == "unauthorized"
