"""A minimum per contract year in the policy (docs/policy.md, "price")."""

from __future__ import annotations

from allotment.policy import compile_policy, validate
from tests.policy.documents import assert_error


def test_a_yearly_minimum_compiles_and_a_period_needs_its_minimum() -> None:
    raw = {
        "currency": "USD",
        "plans": {"committed": {"price": {"minimum": "12000.00", "minimum_period": "year"}}},
    }
    result = validate(raw)
    assert result.errors == [] and result.document is not None
    assert compile_policy(result.document).plans["committed"].price.minimum_period == "year"
    del raw["plans"]["committed"]["price"]["minimum"]
    assert_error(raw, "plans.committed.price.minimum_period", "write the minimum too")
    raw["plans"]["committed"]["price"]["minimum_period"] = "week"
    assert_error(raw, "plans.committed.price.minimum_period", "must be")
