"""A minimum per contract year and shared allowances in the policy (docs/policy.md, "price")."""

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


def test_an_allowance_draws_meters_the_plan_prices_monthly_each_once() -> None:
    meter = {"event_type": "ci.job", "aggregation": "sum", "property": "minutes"}
    raw = {
        "currency": "USD",
        "meters": {"linux": meter, "windows": meter, "mac": meter},
        "plans": {
            "team": {
                "price": {
                    "meters": {
                        "linux": {"tiers": [{"unit": "0.008"}]},
                        "windows": {"tiers": [{"unit": "0.016"}], "period": "year"},
                    },
                    "allowances": {
                        "ci": {
                            "included": 3000,
                            "draw": [
                                {"meter": "linux"},
                                {"meter": "linux", "rate": 2},
                                {"meter": "mac"},
                                {"meter": "windows", "rate": "1.5"},
                            ],
                        }
                    },
                }
            }
        },
    }
    where = "plans.team.price.allowances.ci.draw"
    assert_error(raw, f"{where}[1].meter", "draws on allowance 'ci' already")
    assert_error(raw, f"{where}[2].meter", "the plan prices no meter 'mac'")
    assert_error(raw, f"{where}[3].meter", "period: year")
    raw["plans"]["team"]["price"]["allowances"]["ci"]["draw"] = [{"meter": "linux", "rate": 0}]
    assert_error(raw, f"{where}[0].rate", "")
    raw["plans"]["team"]["price"]["allowances"]["ci"]["draw"] = [{"meter": "linux", "rate": 2}]
    result = validate(raw)
    assert result.errors == [] and result.document is not None
    (shared,) = compile_policy(result.document).plans["team"].price.allowances
    assert (shared.name, shared.included, shared.draw) == ("ci", 3000, (("linux", 2),))


def test_a_quoted_negative_included_says_it_must_be_at_least_0() -> None:
    meter = {"event_type": "api.call", "aggregation": "count"}
    raw = {
        "currency": "USD",
        "meters": {"calls": meter},
        "plans": {
            "team": {
                "price": {"meters": {"calls": {"included": "-1", "tiers": [{"unit": "0.01"}]}}}
            }
        },
    }
    message = assert_error(raw, "plans.team.price.meters.calls.included", "at least 0")
    assert "not -1" in message
