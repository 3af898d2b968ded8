"""Validation: one test per class of error, each asserting the exact path it reports."""

from __future__ import annotations

import pytest

from allotment.policy import PolicyDocument, validate
from tests.policy.documents import assert_error, base, errors_by_path


def test_base_document_is_valid() -> None:
    result = validate(base())
    assert result.errors == []
    assert isinstance(result.document, PolicyDocument)
    assert result.ok


# -- the document's shape -------------------------------------------------------------------


def test_unknown_top_level_key_is_reported_with_the_keys_allowed() -> None:
    raw = base()
    raw["discounts"] = {}
    message = assert_error(raw, "discounts", "unknown key 'discounts'")
    assert "features" in message and "plans" in message


def test_unknown_nested_key_suggests_the_near_miss() -> None:
    raw = base()
    raw["plans"]["team"]["seats"]["limt"] = 3
    assert_error(raw, "plans.team.seats.limt", "unknown key", "did you mean 'limit'?")


def test_unknown_key_in_a_rule_points_into_the_list() -> None:
    raw = base()
    raw["rules"][0]["unless"] = "true"
    assert_error(raw, "rules[0].unless", "unknown key")


def test_wrong_type_names_the_value() -> None:
    raw = base()
    raw["plans"]["team"]["seats"]["limit"] = "10"
    raw["features"]["viewer"]["guests"] = "yes"
    assert_error(raw, "plans.team.seats.limit", "integer", "'10'")
    assert_error(raw, "features.viewer.guests", "boolean")


def test_enumerated_value_lists_the_choices() -> None:
    raw = base()
    raw["plans"]["team"]["seats"]["model"] = "floating"
    assert_error(raw, "plans.team.seats.model", "'named' or 'concurrent'", "'floating'")


def test_attribute_values_are_scalars() -> None:
    raw = base()
    raw["plans"]["team"]["attributes"]["ratio"] = 1.5
    assert_error(raw, "plans.team.attributes.ratio", "string, an integer or a boolean", "float")


def test_bad_names_are_reported_at_the_key() -> None:
    raw = base()
    raw["features"]["Bad-Name"] = {}
    raw["meters"]["has space"] = {"event_type": "x", "aggregation": "count"}
    assert_error(raw, 'features["Bad-Name"]', "lowercase")
    assert_error(raw, 'meters["has space"]', "lowercase")


def test_missing_required_field() -> None:
    raw = base()
    del raw["currency"]
    del raw["meters"]["exports"]["aggregation"]
    assert_error(raw, "currency", "required")
    assert_error(raw, "meters.exports.aggregation", "required")


def test_currency_is_an_iso_code() -> None:
    raw = base()
    raw["currency"] = "dollars"
    assert_error(raw, "currency", "ISO 4217")


def test_empty_rule_condition() -> None:
    raw = base()
    raw["rules"][0]["when"] = ""
    assert_error(raw, "rules[0].when", "must not be empty")


# -- dangling references ----------------------------------------------------------------------


def test_plan_naming_an_unknown_feature() -> None:
    raw = base()
    raw["plans"]["team"]["features"].append("reprots")
    assert_error(raw, "plans.team.features[4]", "unknown feature 'reprots'", "'reports'")


def test_extends_a_missing_plan() -> None:
    raw = base()
    raw["plans"]["enterprise"]["extends"] = "teams"
    assert_error(raw, "plans.enterprise.extends", "unknown plan 'teams'")


def test_feature_requiring_an_unknown_feature() -> None:
    raw = base()
    raw["features"]["sso"]["requires"] = ["audit_log", "saml"]
    assert_error(raw, "features.sso.requires[1]", "unknown feature 'saml'")


def test_metered_feature_needs_an_existing_meter() -> None:
    raw = base()
    raw["features"]["api"]["meter"] = "api_call"
    assert_error(raw, "features.api.meter", "unknown meter 'api_call'", "'api_calls'")


def test_plan_limit_for_an_unknown_meter() -> None:
    raw = base()
    raw["plans"]["team"]["limits"]["storage"] = {"limit": 5}
    assert_error(raw, "plans.team.limits.storage", "unknown meter 'storage'")


def test_plan_price_for_an_unknown_meter() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["meters"]["storage"] = {"tiers": [{"unit": "1.00"}]}
    assert_error(raw, "plans.team.price.meters.storage", "unknown meter 'storage'")


def test_addon_naming_an_unknown_feature() -> None:
    raw = base()
    raw["addons"]["audit_pack"]["features"] = ["audit_logs"]
    assert_error(raw, "addons.audit_pack.features[0]", "unknown feature 'audit_logs'")


def test_rule_naming_an_unknown_feature() -> None:
    raw = base()
    raw["rules"][0]["feature"] = "saml"
    assert_error(raw, "rules[0].feature", "unknown feature 'saml'")


def test_a_malformed_name_is_reported_once_not_also_as_unknown() -> None:
    raw = base()
    raw["features"]["sso"]["requires"] = ["Audit-Log"]
    assert errors_by_path(raw).get("features.sso.requires[0]", []) != []
    assert len(errors_by_path(raw)["features.sso.requires[0]"]) == 1


# -- cycles -----------------------------------------------------------------------------------


def test_dependency_cycle_is_named() -> None:
    raw = base()
    raw["features"].update(
        {"a": {"requires": ["b"]}, "b": {"requires": ["c"]}, "c": {"requires": ["a"]}}
    )
    assert_error(raw, "features.a.requires", "dependency cycle: a -> b -> c -> a")


def test_a_feature_requiring_itself_is_a_cycle() -> None:
    raw = base()
    raw["features"]["audit_log"]["requires"] = ["audit_log"]
    assert_error(raw, "features.audit_log.requires", "audit_log -> audit_log")


def test_inheritance_cycle_is_named() -> None:
    raw = base()
    raw["plans"]["team"]["extends"] = "enterprise"
    assert_error(
        raw, "plans.enterprise.extends", "inheritance cycle: enterprise -> team -> enterprise"
    )


# -- durations and money ----------------------------------------------------------------------


@pytest.mark.parametrize("window", ["3 days", "72", "0h", "1.5h", "-1h", "72H", ""])
def test_bad_duration_text(window: str) -> None:
    raw = base()
    raw["plans"]["team"]["seats"]["burst"]["window"] = window
    assert_error(raw, "plans.team.seats.burst.window", "duration")


def test_a_bare_number_is_not_a_duration() -> None:
    raw = base()
    raw["plans"]["team"]["instances"]["lease_ttl"] = 600
    assert_error(raw, "plans.team.instances.lease_ttl", "30s, 10m, 72h or 14d", "int")


def test_money_with_more_digits_than_the_currency_allows() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["base"] = "1.234"
    assert_error(
        raw, "plans.team.price.base", "'1.234' has 3 decimal places", "USD allows at most 2"
    )


def test_the_minor_unit_follows_the_currency() -> None:
    raw = base()
    raw["currency"] = "JPY"
    raw["plans"]["team"]["price"]["base"] = "500"
    raw["plans"]["team"]["price"]["seat"]["unit"] = "20.00"
    assert errors_by_path(raw) == {
        "plans.team.price.seat.unit": ["'20.00' has 2 decimal places; JPY allows at most 0"],
        "plans.team.price.burst_seat_day": ["'2.00' has 2 decimal places; JPY allows at most 0"],
        "addons.audit_pack.price": ["'100.00' has 2 decimal places; JPY allows at most 0"],
    }
    raw["currency"] = "KWD"
    raw["plans"]["team"]["price"]["base"] = "1.234"
    assert "plans.team.price.base" not in errors_by_path(raw)


@pytest.mark.parametrize(
    ("amount", "fragment"),
    [("-5.00", "negative"), ("5,00", "not an amount"), ("1e3", "not an amount"), (500.0, "float")],
)
def test_bad_money(amount: object, fragment: str) -> None:
    raw = base()
    raw["addons"]["audit_pack"]["price"] = amount
    assert_error(raw, "addons.audit_pack.price", fragment)


def test_rates_may_be_finer_than_the_minor_unit_but_not_endlessly() -> None:
    raw = base()
    tiers = raw["plans"]["team"]["price"]["meters"]["api_calls"]["tiers"]
    tiers[1]["unit"] = "0.0000001"
    assert validate(raw).errors == []
    tiers[1]["unit"] = "0.00000000001"
    assert_error(raw, "plans.team.price.meters.api_calls.tiers[1].unit", "at most 10")


# -- rules ------------------------------------------------------------------------------------


def test_cel_that_does_not_compile_carries_the_cel_error() -> None:
    raw = base()
    raw["rules"][0]["when"] = "contract.attributes.region !="
    assert_error(raw, "rules[0].when", "CEL does not compile", "Syntax error")


def test_cel_reading_an_unknown_variable() -> None:
    raw = base()
    raw["rules"][0]["when"] = "contrct.attributes.region != 'cn'"
    assert_error(raw, "rules[0].when", "unknown variable 'contrct'", "contract")


def test_cel_macro_variables_are_not_unknown() -> None:
    raw = base()
    raw["rules"][0]["when"] = "context.tags.exists(t, t == 'beta') && usage.all(m, m >= 0)"
    assert validate(raw).errors == []


# -- plans and inheritance --------------------------------------------------------------------


def test_signed_entries_need_a_plan_that_extends() -> None:
    raw = base()
    raw["plans"]["team"]["features"][0] = "+reports"
    assert_error(raw, "plans.team.features[0]", "does not extend", "write 'reports'")


def test_removing_a_feature_the_parent_does_not_have() -> None:
    raw = base()
    raw["plans"]["enterprise"]["features"].append("-scim")
    assert_error(raw, "plans.enterprise.features[3]", "removes 'scim'", "plan 'team'")


def test_adding_and_removing_the_same_feature() -> None:
    raw = base()
    raw["plans"]["enterprise"]["features"] = ["+sso", "-sso"]
    assert_error(raw, "plans.enterprise.features[1]", "both added and removed")


def test_only_the_last_tier_may_omit_up_to() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["meters"]["api_calls"]["tiers"] = [
        {"unit": "0.001"},
        {"unit": "0.0005"},
    ]
    assert_error(raw, "plans.team.price.meters.api_calls.tiers[0].up_to", "only the last tier")


def test_tier_bounds_strictly_increase() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["meters"]["api_calls"]["tiers"] = [
        {"up_to": 1000, "unit": "0.01"},
        {"up_to": 1000, "unit": "0.005"},
        {"unit": "0.001"},
    ]
    assert_error(raw, "plans.team.price.meters.api_calls.tiers[1].up_to", "greater than", "(1000)")


def test_burst_window_required_when_extra_is_above_zero() -> None:
    raw = base()
    del raw["plans"]["team"]["seats"]["burst"]["window"]
    assert_error(raw, "plans.team.seats.burst.window", "required when burst.extra", "2")
    # enterprise inherits the same gap; it is reported once, on team
    assert "plans.enterprise.seats.burst.window" not in errors_by_path(raw)


def test_burst_window_may_come_from_the_parent() -> None:
    raw = base()
    raw["plans"]["enterprise"]["seats"]["burst"] = {"extra": 10}
    assert validate(raw).errors == []


def test_a_child_raising_burst_without_any_window_is_reported_on_the_child() -> None:
    raw = base()
    del raw["plans"]["team"]["seats"]["burst"]
    raw["plans"]["enterprise"]["seats"]["burst"] = {"extra": 10}
    assert_error(raw, "plans.enterprise.seats.burst.window", "required", "a plan it extends")


def test_fields_required_once_inheritance_is_resolved() -> None:
    raw = base()
    raw["plans"]["starter"] = {"seats": {"guests": 2}, "limits": {"api_calls": {"period": "day"}}}
    assert_error(raw, "plans.starter.seats.limit", "required")
    assert_error(raw, "plans.starter.limits.api_calls.limit", "required")


@pytest.mark.parametrize("weight", [0, -1, "1", 1.5, True])
def test_instance_kind_weights_are_positive_integers(weight: object) -> None:
    raw = base()
    raw["plans"]["team"]["instances"]["kinds"]["vm"] = weight
    assert "plans.team.instances.kinds.vm" in errors_by_path(raw)


def test_meter_property_required_for_sum_max_and_unique_count() -> None:
    raw = base()
    del raw["meters"]["api_calls"]["property"]
    assert_error(raw, "meters.api_calls.property", "required", "'sum'")


def test_meter_property_not_allowed_for_count() -> None:
    raw = base()
    raw["meters"]["exports"]["property"] = "rows"
    assert_error(raw, "meters.exports.property", "not allowed", "count")


# -- one pass ---------------------------------------------------------------------------------


def test_every_error_is_reported_in_one_pass() -> None:
    raw = base()
    raw["plans"]["team"]["seats"]["limt"] = 3  # model
    raw["plans"]["team"]["price"]["base"] = "1.234"  # model, with the currency
    raw["features"]["sso"]["requires"] = ["saml"]  # reference
    raw["features"].update({"a": {"requires": ["b"]}, "b": {"requires": ["a"]}})  # cycle
    raw["rules"][0]["when"] = "("  # CEL
    raw["plans"]["team"]["price"]["meters"]["api_calls"]["tiers"][0].pop("up_to")  # tiers
    found = errors_by_path(raw)
    assert {
        "plans.team.seats.limt",
        "plans.team.price.base",
        "features.sso.requires[0]",
        "features.a.requires",
        "rules[0].when",
        "plans.team.price.meters.api_calls.tiers[0].up_to",
    } <= set(found)


def test_a_document_that_is_not_a_mapping() -> None:
    assert validate(["currency", "USD"]).errors == [
        {"path": "$", "message": "a policy is a mapping of sections, not a list"}
    ]


def test_a_section_of_the_wrong_type_does_not_stop_the_other_checks() -> None:
    raw = base()
    raw["meters"] = ["api_calls"]
    raw["rules"][0]["feature"] = "saml"
    found = errors_by_path(raw)
    assert "meters" in found
    assert "rules[0].feature" in found


def test_an_entry_that_is_not_a_mapping() -> None:
    raw = base()
    raw["plans"]["team"] = ["reports"]
    raw["rules"].append("sso")
    assert_error(raw, "plans.team", "must be a mapping")
    assert_error(raw, "rules[1]", "must be a mapping")


def test_corrections_only_on_a_sum_meter() -> None:
    raw = base()
    raw["meters"]["api_calls"]["corrections"] = True
    raw["meters"]["exports"]["corrections"] = True
    raw["meters"]["peak"] = {
        "event_type": "jobs.running",
        "aggregation": "max",
        "property": "n",
        "corrections": True,
    }
    found = errors_by_path(raw)
    assert "meters.api_calls.corrections" not in found
    assert_error(raw, "meters.exports.corrections", "only a 'sum' meter", "'count'")
    assert_error(raw, "meters.peak.corrections", "only a 'sum' meter", "'max'")


def test_corrections_false_is_allowed_on_any_meter() -> None:
    raw = base()
    raw["meters"]["exports"]["corrections"] = False
    assert errors_by_path(raw) == {}


def test_corrections_is_a_boolean() -> None:
    raw = base()
    raw["meters"]["api_calls"]["corrections"] = "yes"
    assert_error(raw, "meters.api_calls.corrections", "boolean")
