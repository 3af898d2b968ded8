"""The compiler: inheritance resolved, closures, defaults, compiled rules, immutability, digest."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml

from allotment.policy import (
    Catalog,
    PolicyCompileError,
    PolicyDocument,
    compile_policy,
    digest,
    load,
    validate,
)
from allotment.policy.catalog import Burst, InstancePool
from tests.policy.documents import base


def compiled(raw: dict[str, Any]) -> Catalog:
    result = validate(raw)
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def test_child_plan_adds_and_removes_features() -> None:
    raw = base()
    raw["plans"]["enterprise"]["features"] = ["+sso", "+audit_log", "-viewer", "agent"]
    plan = compiled(raw).plans["enterprise"]
    assert plan.features == {"reports", "editor", "api", "sso", "audit_log", "agent"}
    assert plan.ancestors == ("team",)


def test_child_without_a_features_list_inherits_the_parent_set() -> None:
    raw = base()
    del raw["plans"]["enterprise"]["features"]
    catalog = compiled(raw)
    assert catalog.plans["enterprise"].features == catalog.plans["team"].features


def test_blocks_merge_field_by_field() -> None:
    raw = base()
    raw["plans"]["enterprise"].update(
        {
            "attributes": {"edition": "enterprise"},
            "seats": {"limit": 100, "burst": {"extra": 10}},
            "instances": {"kinds": {"container": 1}},
            "limits": {"api_calls": {"limit": 5_000_000}},
            "price": {"seat": {"included": 50}, "meters": {"api_calls": {"included": 1}}},
        }
    )
    team = compiled(raw).plans["team"]
    plan = compiled(raw).plans["enterprise"]
    assert dict(plan.attributes) == {"edition": "enterprise", "support_level": "standard"}
    assert plan.seats is not None and team.seats is not None
    assert (plan.seats.limit, plan.seats.guests, plan.seats.model) == (100, 5, "named")
    assert plan.seats.burst == Burst(extra=10, window=timedelta(hours=72))
    assert plan.instances is not None
    assert dict(plan.instances.kinds) == {"vm": 1, "cluster": 4, "container": 1}
    assert plan.instances.limit == 3
    assert plan.limits["api_calls"].limit == 5_000_000
    assert plan.limits["api_calls"].enforcement == "hard"
    assert plan.price.seat is not None
    assert (plan.price.seat.unit, plan.price.seat.included) == (Decimal("20.00"), 50)
    assert plan.price.base == Decimal("500.00")
    assert plan.price.meters["api_calls"].included == 1
    assert plan.price.meters["api_calls"].tiers == team.price.meters["api_calls"].tiers


def test_tiers_are_replaced_as_a_whole() -> None:
    raw = base()
    raw["plans"]["enterprise"]["price"] = {"meters": {"api_calls": {"tiers": [{"unit": "0.0001"}]}}}
    tiers = compiled(raw).plans["enterprise"].price.meters["api_calls"].tiers
    assert [(tier.up_to, tier.unit) for tier in tiers] == [(None, Decimal("0.0001"))]


def test_inheritance_over_three_levels() -> None:
    raw = base()
    raw["plans"]["global"] = {
        "extends": "enterprise",
        "features": ["-api"],
        "seats": {"guests": 50},
    }
    plan = compiled(raw).plans["global"]
    assert plan.ancestors == ("enterprise", "team")
    assert "api" not in plan.features and "sso" in plan.features
    assert plan.seats is not None and (plan.seats.limit, plan.seats.guests) == (100, 50)


def test_null_means_not_written() -> None:
    raw = base()
    raw["plans"]["enterprise"]["seats"] = {"limit": 100, "burst": None}
    plan = compiled(raw).plans["enterprise"]
    assert plan.seats is not None and plan.seats.burst == Burst(extra=2, window=timedelta(days=3))


def test_closure_holds_every_transitive_dependency_but_not_the_feature() -> None:
    catalog = compiled(base())
    assert catalog.features["scim"].requires == {"sso"}
    assert catalog.features["scim"].closure == {"sso", "audit_log"}
    assert catalog.features["sso"].closure == {"audit_log"}
    assert catalog.features["reports"].closure == frozenset()


def test_feature_flags() -> None:
    features = compiled(base()).features
    assert features["editor"].seat_required and not features["editor"].guests
    assert features["viewer"].seat_required and features["viewer"].guests
    assert features["agent"].instance_required and not features["agent"].seat_required
    assert features["api"].meter == "api_calls"
    assert features["reports"].on_outage == "deny"


def test_defaults_are_applied() -> None:
    raw = base()
    raw["plans"]["floating"] = {
        "seats": {"limit": 5, "model": "concurrent"},
        "instances": {"limit": 2},
        "limits": {"exports": {"limit": 10}},
        "price": {"seat": {"unit": "1.00"}},
    }
    plan = compiled(raw).plans["floating"]
    assert plan.seats is not None and plan.seats.session_ttl == timedelta(minutes=15)
    assert plan.seats.burst is None and plan.seats.guests == 0
    assert plan.instances == InstancePool(limit=2, kinds={}, lease_ttl=timedelta(minutes=10))
    assert plan.instances.weight("anything") == 1
    assert (plan.limits["exports"].period, plan.limits["exports"].enforcement) == ("month", "hard")
    assert plan.price.seat is not None
    assert (plan.price.seat.basis, plan.price.seat.included) == ("peak", 0)
    assert plan.price.base == plan.price.burst_seat_day == Decimal("0")
    assert compiled(raw).plans["team"].seats.session_ttl is None  # type: ignore[union-attr]


def test_instance_weight_of_a_kind_the_plan_does_not_list() -> None:
    pool = compiled(base()).plans["team"].instances
    assert pool is not None
    assert (pool.weight("cluster"), pool.weight("vm"), pool.weight("lambda")) == (4, 1, None)


def test_rules_are_compiled_once_and_grouped_by_feature() -> None:
    raw = base()
    raw["rules"].append(
        {"feature": "sso", "when": "now < timestamp('2100-01-01T00:00:00Z')", "reason": "sunset"}
    )
    rules = compiled(raw).rules
    assert list(rules) == ["sso"]
    assert [rule.reason for rule in rules["sso"]] == ["region_not_supported", "sunset"]
    assert all(rule.program is not None for rule in rules["sso"])
    assert compiled(raw).rules_for("reports") == ()


def test_rule_evaluation_allows_denies_and_denies_on_error() -> None:
    rule = compiled(base()).rules["sso"][0]
    assert rule.evaluate({"contract": {"attributes": {"region": "us"}}}) is True
    assert rule.evaluate({"contract": {"attributes": {"region": "cn"}}}) is False
    assert rule.evaluate({"contract": {"attributes": {}}}) is False  # missing key: cannot prove
    assert rule.evaluate({}) is False


def test_a_rule_that_yields_a_non_boolean_denies() -> None:
    raw = base()
    raw["rules"] = [{"feature": "sso", "when": "contract.attributes.region", "reason": "odd"}]
    rule = compiled(raw).rules["sso"][0]
    assert rule.evaluate({"contract": {"attributes": {"region": "us"}}}) is False


def test_a_rule_reads_now_as_a_timestamp() -> None:
    raw = base()
    raw["rules"] = [
        {"feature": "sso", "when": "now < timestamp('2030-01-01T00:00:00Z')", "reason": "sunset"}
    ]
    rule = compiled(raw).rules["sso"][0]
    assert rule.evaluate({"now": datetime(2029, 12, 31, tzinfo=UTC)}) is True
    assert rule.evaluate({"now": datetime(2030, 1, 2, tzinfo=UTC)}) is False


def test_catalog_is_immutable() -> None:
    catalog = compiled(base())
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalog.currency = "EUR"  # type: ignore[misc]
    with pytest.raises(TypeError):
        catalog.plans["team"] = catalog.plans["enterprise"]  # type: ignore[index]
    with pytest.raises(TypeError):
        catalog.plans["team"].attributes["edition"] = "x"  # type: ignore[index]
    assert isinstance(catalog.plans["team"].features, frozenset)
    assert isinstance(catalog.plans["team"].price.meters["api_calls"].tiers, tuple)


def test_currency_and_minor_digits() -> None:
    raw = base()
    raw["currency"] = "JPY"
    raw["plans"]["team"]["price"].update(
        {"base": "500", "seat": {"unit": "20"}, "burst_seat_day": "2"}
    )
    raw["addons"]["audit_pack"]["price"] = "100"
    catalog = compiled(raw)
    assert (catalog.currency, catalog.minor_digits) == ("JPY", 0)


def test_digest_is_the_same_for_yaml_and_json_and_differs_on_change() -> None:
    as_yaml = load(yaml.safe_dump(base()), "application/yaml").document
    as_json = load(json.dumps(base(), indent=2), "application/json").document
    assert as_yaml is not None and as_json is not None
    assert digest(as_yaml) == digest(as_json) == compiled(base()).digest
    raw = base()
    raw["plans"]["team"]["price"]["base"] = "501.00"
    assert compiled(raw).digest != digest(as_json)


def test_digest_ignores_spelling_of_defaults_and_durations() -> None:
    raw = base()
    raw["features"]["reports"] = {"on_outage": "deny", "guests": False}
    raw["plans"]["team"]["seats"]["burst"]["window"] = "3d"
    assert compiled(raw).digest == compiled(base()).digest


def test_compiling_an_unvalidated_document_with_a_broken_chain_raises() -> None:
    raw = base()
    raw["plans"]["team"]["extends"] = "enterprise"
    document = PolicyDocument.model_validate(raw)  # the model alone does not see cycles
    with pytest.raises(PolicyCompileError, match="inheritance cycle"):
        compile_policy(document)


def test_a_meter_accepts_corrections_only_when_it_says_so() -> None:
    raw = base()
    raw["meters"]["api_calls"]["corrections"] = True
    catalog = compiled(raw)
    assert catalog.meters["api_calls"].corrections is True
    assert catalog.meters["exports"].corrections is False
    assert compiled(base()).meters["api_calls"].corrections is False


def test_corrections_false_spelled_out_keeps_the_digest() -> None:
    # Documents stored before `corrections` existed keep their digest: false is the default
    # and is not written into the canonical form.
    raw = base()
    raw["meters"]["api_calls"]["corrections"] = False
    assert compiled(raw).digest == compiled(base()).digest
    raw["meters"]["api_calls"]["corrections"] = True
    assert compiled(raw).digest != compiled(base()).digest
