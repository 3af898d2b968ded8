"""Validation and compilation of annual terms (`price.interval`, a meter price's and a limit's
`period: year`, an add-on's `interval`) and price lists per currency (docs/policy.md). One
test per error, each asserting the exact path it reports."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from allotment.policy import compile_policy, validate
from tests.policy.documents import assert_error, base

D = Decimal


def compiled(raw: dict[str, Any]) -> Any:
    result = validate(raw)
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def annual(raw: dict[str, Any]) -> dict[str, Any]:
    team = raw["plans"]["team"]
    team["price"]["interval"] = "year"
    team["price"]["meters"]["api_calls"]["period"] = "year"
    team["limits"]["api_calls"]["period"] = "year"
    raw["addons"]["audit_pack"]["interval"] = "year"
    return raw


def listed(raw: dict[str, Any]) -> dict[str, Any]:
    raw["plans"]["team"]["price_lists"] = {
        "EUR": {"base": "450.00", "meters": {"api_calls": {"tiers": [{"unit": "0.0009"}]}}},
        "JPY": {"base": "75000"},
        "KWD": {"base": "150.125"},
    }
    raw["addons"]["audit_pack"]["price_lists"] = {"EUR": "90.00", "JPY": "15000"}
    return raw


# -- accepted, and compiled ------------------------------------------------------------------


def test_annual_terms_compile_to_the_catalog() -> None:
    catalog = compiled(annual(base()))
    team = catalog.plans["team"]
    assert team.price.interval == "year"
    assert team.price.meters["api_calls"].period == "year"
    assert team.limits["api_calls"].period == "year"
    assert catalog.addons["audit_pack"].interval == "year"
    # Inherited by a plan that extends it.
    assert catalog.plans["enterprise"].price.interval == "year"


def test_price_lists_compile_each_in_its_currency() -> None:
    catalog = compiled(listed(base()))
    lists = catalog.plans["team"].price_lists
    assert lists["EUR"].base == D("450.00")
    assert lists["EUR"].meters["api_calls"].tiers[0].unit == D("0.0009")
    assert (lists["JPY"].base, lists["KWD"].base) == (D("75000"), D("150.125"))
    assert dict(catalog.addons["audit_pack"].price_lists) == {"EUR": D("90.00"), "JPY": D("15000")}
    assert catalog.plans["enterprise"].price_lists["JPY"].base == D("75000")  # inherited


def test_a_policy_without_the_new_keys_keeps_its_digest() -> None:
    plain = compiled(base())
    assert plain.digest == "e5cae1e2c5f1025ce3040a90cc7543dfad454fcbd4fc697ebff50780175b1a84"
    assert plain.plans["team"].price.interval == "month"
    assert dict(plain.plans["team"].price_lists) == {}


# -- errors -------------------------------------------------------------------------------------


def test_an_interval_is_month_or_year() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["interval"] = "week"
    assert_error(raw, "plans.team.price.interval", "'month' or 'year'")


def test_an_add_on_interval_is_month_or_year() -> None:
    raw = base()
    raw["addons"]["audit_pack"]["interval"] = "quarter"
    assert_error(raw, "addons.audit_pack.interval", "'month' or 'year'")


def test_a_limit_period_may_be_a_year() -> None:
    raw = base()
    raw["plans"]["team"]["limits"]["api_calls"]["period"] = "week"
    assert_error(raw, "plans.team.limits.api_calls.period", "'year'")


def test_a_yearly_allowance_is_for_a_count_or_a_sum() -> None:
    raw = base()
    raw["meters"]["peak"] = {"event_type": "peak", "aggregation": "max", "property": "n"}
    raw["plans"]["team"]["price"]["meters"]["peak"] = {"period": "year", "tiers": [{"unit": "1"}]}
    assert_error(raw, "plans.team.price.meters.peak.period", "count or a sum", "'max'")


def test_a_yearly_allowance_is_not_a_percentile() -> None:
    raw = base()
    raw["meters"]["p95"] = {
        "event_type": "p",
        "aggregation": "sum",
        "property": "n",
        "percentile": 95,
    }
    raw["plans"]["team"]["price"]["meters"]["p95"] = {"period": "year", "tiers": [{"unit": "1"}]}
    assert_error(raw, "plans.team.price.meters.p95.period", "with a percentile")


def test_a_yearly_meter_takes_no_volume_tiers_even_inherited() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["meters"]["api_calls"]["mode"] = "volume"
    raw["plans"]["enterprise"]["price"] = {"meters": {"api_calls": {"period": "year"}}}
    assert_error(raw, "plans.enterprise.price.meters.api_calls.mode", "graduated tiers or packages")


def test_a_price_list_key_is_a_currency_code() -> None:
    raw = base()
    raw["plans"]["team"]["price_lists"] = {"euro": {"base": "1.00"}}
    assert_error(raw, "plans.team.price_lists.euro", "ISO 4217")


def test_a_price_list_fee_has_at_most_its_own_currencys_minor_digits() -> None:
    raw = listed(base())
    raw["plans"]["team"]["price_lists"]["JPY"]["base"] = "75000.50"
    raw["plans"]["team"]["price_lists"]["KWD"]["base"] = "1.2345"
    assert_error(raw, "plans.team.price_lists.JPY.base", "2 decimal places", "JPY allows at most 0")
    assert_error(raw, "plans.team.price_lists.KWD.base", "KWD allows at most 3")


def test_an_add_on_price_list_fee_has_its_currencys_minor_digits() -> None:
    raw = listed(base())
    raw["addons"]["audit_pack"]["price_lists"]["JPY"] = "15000.5"
    assert_error(raw, "addons.audit_pack.price_lists.JPY", "JPY allows at most 0")


def test_no_price_list_in_the_documents_own_currency() -> None:
    raw = listed(base())
    raw["plans"]["team"]["price_lists"]["USD"] = {"base": "500.00"}
    assert_error(raw, "plans.team.price_lists.USD", "the document's currency")


def test_no_add_on_price_list_in_the_documents_own_currency() -> None:
    raw = listed(base())
    raw["addons"]["audit_pack"]["price_lists"]["USD"] = "100.00"
    assert_error(raw, "addons.audit_pack.price_lists.USD", "the document's currency")


def test_a_price_list_prices_only_known_meters() -> None:
    raw = listed(base())
    raw["plans"]["team"]["price_lists"]["EUR"]["meters"]["exportz"] = {"tiers": [{"unit": "1"}]}
    assert_error(raw, "plans.team.price_lists.EUR.meters.exportz", "unknown meter")


def test_a_price_lists_tiers_are_checked_like_the_prices() -> None:
    raw = listed(base())
    raw["plans"]["team"]["price_lists"]["EUR"]["meters"]["api_calls"]["tiers"] = [
        {"up_to": 10, "unit": "1"},
        {"up_to": 5, "unit": "1"},
    ]
    assert_error(raw, "plans.team.price_lists.EUR.meters.api_calls.tiers[1].up_to", "greater")


def test_a_price_list_is_a_whole_price() -> None:
    raw = listed(base())
    raw["plans"]["team"]["price_lists"]["EUR"]["seat"] = {"included": 5}
    assert_error(raw, "plans.team.price_lists.EUR.seat.unit", "required")
