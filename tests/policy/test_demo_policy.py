"""The demo catalog validates, compiles, and says what the docs say it does."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from allotment.policy import Catalog, compile_policy, demo_policy, load, parse

DEMO = Path(__file__).resolve().parents[2] / "src" / "allotment" / "policy" / "demo_policy.yaml"


def demo_catalog() -> Catalog:
    result = load(demo_policy(), "application/yaml")
    assert result.errors == []
    assert result.document is not None
    return compile_policy(result.document)


def test_demo_policy_validates_and_compiles() -> None:
    catalog = demo_catalog()
    assert catalog.currency == "USD"
    assert set(catalog.plans) == {"starter", "team", "enterprise", "floating"}
    assert set(catalog.addons) == {"audit_pack", "priority_support"}
    assert len(catalog.features) >= 10


def test_demo_enterprise_is_team_plus_sso_audit_log_and_agent() -> None:
    catalog = demo_catalog()
    team, enterprise = catalog.plans["team"], catalog.plans["enterprise"]
    assert {"sso", "audit_log", "agent"} <= enterprise.features
    assert team.features < enterprise.features
    assert enterprise.seats is not None and enterprise.seats.limit == 100
    assert enterprise.seats.burst is not None and enterprise.seats.burst.extra == 10
    assert catalog.features["sso"].closure == {"audit_log"}
    assert catalog.features["scim"].closure == {"sso", "audit_log"}


def test_demo_prices_follow_the_design() -> None:
    team = demo_catalog().plans["team"]
    assert team.price.base == Decimal("500.00")
    assert team.price.seat is not None and team.price.seat.unit == Decimal("20.00")
    tiers = team.price.meters["api_calls"].tiers
    assert [tier.up_to for tier in tiers] == [1_000_000, None]


def test_demo_floating_plan_uses_concurrent_seats_without_burst() -> None:
    floating = demo_catalog().plans["floating"]
    assert floating.seats is not None
    assert floating.seats.model == "concurrent"
    assert floating.seats.burst is None
    assert (
        floating.seats.session_ttl is not None
        and floating.seats.session_ttl.total_seconds() == 1800
    )


def test_demo_sso_rule_denies_china_only() -> None:
    (rule,) = demo_catalog().rules["sso"]
    assert rule.reason == "region_not_supported"
    assert rule.evaluate({"contract": {"attributes": {"region": "cn"}}}) is False
    assert rule.evaluate({"contract": {"attributes": {"region": "us"}}}) is True
    assert rule.evaluate({"contract": {"attributes": {}}}) is True


def test_the_worked_example_in_the_docs_is_the_demo_policy() -> None:
    docs = (DEMO.parents[3] / "docs" / "policy.md").read_text()
    example = docs.split("## A worked example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert parse(example, "application/yaml") == parse(DEMO.read_text(), "application/yaml")
