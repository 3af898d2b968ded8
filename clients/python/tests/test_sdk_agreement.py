"""Whatever `local.decide()` answers, the service answers the same: every feature of the
demo catalog (and an unknown one), with and without a subject holding a seat, an instance
(the bound machine, another), a tenant and a context, on four plans."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from allotment_client import Allotment, _calls
from conftest import Service

FEATURES = [
    "reports", "dashboards", "editor", "viewer", "agent", "api", "exports", "audit_log",
    "sso", "scim", "priority_support", "teleport",
]  # fmt: skip
SUBJECTS = [None, "ann", "bob"]  # ann holds a seat (or a session on `floating`)
INSTANCES = [None, "node-1", "node-2"]  # node-1 is this machine, holding a live lease
TENANTS = [None, "t-none"]
CONTEXTS: list[dict[str, Any] | None] = [None, {"beta": True}]


async def test_every_local_answer_is_the_services(service: Service) -> None:
    plans = ["team", "enterprise", "starter", "floating"]
    customers = [(await service.customer(plan=plan))[0] for plan in plans]

    def scenario() -> tuple[int, int]:
        local = remote = 0
        for customer, plan in zip(customers, plans, strict=True):
            with Allotment(
                service.url, service.key, local=True, fingerprint="node-1", stream=False,
                spool=False,
            ) as sdk:  # fmt: skip
                if plan == "floating":
                    sdk.open_session(customer, "ann")
                else:
                    sdk.assign_seat(customer, "ann")
                lease = (
                    sdk.hold_instance(customer, "node-1", kind="vm")
                    if plan in ("team", "enterprise")
                    else None
                )
                for feature, subject, instance, tenant, context in itertools.product(
                    FEATURES, SUBJECTS, INSTANCES, TENANTS, CONTEXTS
                ):
                    ask = {"subject": subject, "instance": instance, "tenant": tenant,
                           "context": context}  # fmt: skip
                    mine = sdk.check(customer, feature, **ask)
                    if not mine.local:
                        remote += 1
                        continue
                    local += 1
                    theirs = sdk._send(_calls.check(customer, feature, **ask))
                    assert (mine.allowed, mine.reason) == (theirs.allowed, theirs.reason), (
                        plan, feature, ask, mine, theirs
                    )  # fmt: skip
                    assert set(mine.warnings) == set(theirs.warnings), (plan, feature, ask)
                if lease is not None:
                    lease.release()
        return local, remote

    local, remote = await asyncio.to_thread(scenario)
    assert local > 300 and remote > 300  # both paths were exercised
