"""Tenant quota arithmetic, pure."""

from __future__ import annotations

from datetime import UTC, datetime

from allotment.contracts.limits import effective_limits
from allotment.contracts.terms import Terms
from allotment.tenants.quotas import Excess, Quotas, excesses, total
from tests.factories.policies_for_contracts import demo_catalog as catalog

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_total_sums_only_what_is_given() -> None:
    summed = total(
        [
            Quotas(seats=2, meters={"api_calls": 10}),
            Quotas(instances=1),
            Quotas(seats=3, meters={"api_calls": 5, "exports": 1}),
        ]
    )
    assert (summed.seats, summed.instances) == (5, 1)
    assert dict(summed.meters) == {"api_calls": 15, "exports": 1}
    assert total([Quotas()]) == Quotas()


def test_excesses_name_the_pool_and_by_how_much() -> None:
    limits = effective_limits(
        Terms(plan="team", kind="standard", starts_at=T0, ends_at=None), catalog(), at=T0
    )
    found = excesses(Quotas(seats=14, instances=3, meters={"api_calls": 100_001}), limits)
    assert found == [
        Excess("seats", None, 14, 10),
        Excess("meter", "api_calls", 100_001, 100_000),
    ]
    assert (found[0].over, found[0].noun) == (4, "seat")
    starter = effective_limits(
        Terms(plan="starter", kind="standard", starts_at=T0, ends_at=None), catalog(), at=T0
    )
    assert excesses(Quotas(instances=0), starter) == [Excess("instances", None, 0, None)]


def test_quotas_json_round_trip() -> None:
    quotas = Quotas(seats=1, meters={"b": 2, "a": 1})
    assert quotas.to_json() == {"seats": 1, "meters": {"a": 1, "b": 2}}
    assert Quotas.from_json(quotas.to_json()).to_json() == quotas.to_json()
    assert Quotas.from_json(None) == Quotas()
