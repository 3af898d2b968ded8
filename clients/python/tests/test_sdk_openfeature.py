"""The OpenFeature provider through openfeature-sdk's own client, on the real service."""

from __future__ import annotations

import asyncio

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from allotment_client import Allotment
from allotment_client.openfeature import AllotmentProvider
from conftest import Service


async def test_features_are_boolean_flags_and_limits_integer_flags(service: Service) -> None:
    def scenario(customer: str, local: bool) -> None:
        sdk = Allotment(service.url, service.key, local=local, stream=False, spool=False)
        api.set_provider(AllotmentProvider(sdk))
        flags = api.get_client()
        acme = EvaluationContext(attributes={"customer": customer})

        reports = flags.get_boolean_details("reports", False, acme)
        assert (reports.value, reports.reason, reports.variant) == (
            True,
            Reason.TARGETING_MATCH,
            "on",
        )
        assert reports.flag_metadata["reason"] == "ok"
        sso = flags.get_boolean_details("sso", True, acme)
        assert (sso.value, sso.reason, sso.variant) == (False, Reason.DISABLED, "off")
        assert sso.flag_metadata["reason"] == "feature_not_in_plan"

        ann = EvaluationContext("ann", {"customer": customer})
        assert flags.get_boolean_value("editor", True, ann) is False  # no seat yet
        sdk.assign_seat(customer, "ann")
        assert flags.get_boolean_value("editor", False, ann) is True

        missing = flags.get_boolean_details("teleport", True, acme)
        assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
        no_customer = flags.get_boolean_details("reports", False, EvaluationContext("ann"))
        assert no_customer.error_code == ErrorCode.INVALID_CONTEXT

        assert flags.get_integer_value("api.limit", 0, acme) == 100_000  # the team plan's
        assert flags.get_integer_value("exports.remaining", 0, acme) == 1000
        unknown = flags.get_integer_details("teleport.limit", 7, acme)
        assert (unknown.value, unknown.error_code) == (7, ErrorCode.FLAG_NOT_FOUND)
        wrong = flags.get_string_details("reports", "x", acme)
        assert wrong.error_code == ErrorCode.TYPE_MISMATCH
        api.shutdown()

    for local in (False, True):
        customer, _ = await service.customer(plan="team")
        await asyncio.to_thread(scenario, customer, local)
