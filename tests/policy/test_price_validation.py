"""Validation and compilation of the richer `price` keys: tier modes and flat fees, packages,
seat tiers, instance prices by kind, `minimum` and `one_time` (docs/policy.md). One test per
error, each asserting the exact path it reports."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from allotment.policy import compile_policy, validate
from allotment.policy.catalog import Package, Tier
from tests.policy.documents import assert_error, base, errors_by_path

D = Decimal


def team_price(raw: dict[str, Any]) -> dict[str, Any]:
    price: dict[str, Any] = raw["plans"]["team"]["price"]
    return price


def compiled(raw: dict[str, Any]) -> Any:
    result = validate(raw)
    assert result.document is not None, result.errors
    return compile_policy(result.document)


# -- accepted, and compiled ------------------------------------------------------------------


def test_every_new_key_compiles_to_the_catalog() -> None:
    raw = base()
    price = team_price(raw)
    price["meters"]["api_calls"]["mode"] = "volume"
    price["meters"]["api_calls"]["tiers"][0]["flat"] = "25.00"
    price["seat"] = {"tiers": [{"up_to": 10, "unit": "20.00"}, {"unit": "15.00"}], "mode": "volume"}
    price["instances"] = {"kinds": {"cluster": "0.50"}}
    price["minimum"] = "1000.00"
    price["one_time"] = {"setup": "1500.00"}
    raw["meters"]["storage"] = {"event_type": "storage", "aggregation": "max", "property": "gb"}
    price["meters"]["storage"] = {"included": 10, "package": {"size": 100, "price": "5.00"}}
    team = compiled(raw).plans["team"].price
    meter = team.meters["api_calls"]
    assert meter.mode == "volume"
    assert meter.tiers[0] == Tier(1000000, D("0.001"), D("25.00"))
    assert meter.package is None
    assert team.meters["storage"].package == Package(size=100, price=D("5.00"))
    assert team.meters["storage"].tiers == ()
    assert team.seat.unit is None
    assert team.seat.tiers == (Tier(10, D("20.00")), Tier(None, D("15.00")))
    assert team.seat.mode == "volume"
    assert dict(team.instance_kinds) == {"cluster": D("0.50")}
    assert team.minimum == D("1000.00")
    assert dict(team.one_time) == {"setup": D("1500.00")}


def test_a_policy_without_the_new_keys_keeps_its_meaning_and_digest() -> None:
    plain = compiled(base())
    # The base document's digest as computed before these keys existed.
    assert plain.digest == "e5cae1e2c5f1025ce3040a90cc7543dfad454fcbd4fc697ebff50780175b1a84"
    team = plain.plans["team"].price
    assert team.meters["api_calls"].mode == "graduated"
    assert team.minimum is None and dict(team.one_time) == {} and dict(team.instance_kinds) == {}
    assert team.seat.unit == D("20.00") and team.seat.tiers == ()


def test_writing_the_default_mode_changes_the_digest_but_not_the_prices() -> None:
    # `mode: graduated` is kept as written (a child may write it to undo a parent's volume),
    # so it is a different document; its prices are the same.
    raw = base()
    team_price(raw)["meters"]["api_calls"]["mode"] = "graduated"
    written = compiled(raw)
    plain = compiled(base())
    assert written.plans["team"].price == plain.plans["team"].price


def test_a_child_switches_tiers_to_a_package_and_back() -> None:
    raw = base()
    raw["plans"]["enterprise"]["price"] = {
        "meters": {"api_calls": {"package": {"size": 1000, "price": "1.00"}}},
        "seat": {"tiers": [{"unit": "10.00"}]},
    }
    raw["plans"]["global"] = {
        "extends": "enterprise",
        "price": {"meters": {"api_calls": {"tiers": [{"unit": "0.002"}], "mode": "volume"}}},
    }
    catalog = compiled(raw)
    enterprise = catalog.plans["enterprise"].price
    assert enterprise.meters["api_calls"].package == Package(1000, D("1.00"))
    assert enterprise.meters["api_calls"].tiers == ()
    assert enterprise.meters["api_calls"].included == 100000  # kept from team
    assert enterprise.seat.unit is None and enterprise.seat.included == 5
    back = catalog.plans["global"].price.meters["api_calls"]
    assert (back.package, back.tiers, back.mode) == (None, (Tier(None, D("0.002")),), "volume")


def test_a_child_that_writes_a_seat_unit_drops_the_inherited_tiers_and_mode() -> None:
    raw = base()
    team_price(raw)["seat"] = {"tiers": [{"unit": "20.00"}], "mode": "volume"}
    raw["plans"]["enterprise"]["price"] = {"seat": {"unit": "12.00"}}
    seat = compiled(raw).plans["enterprise"].price.seat
    assert (seat.unit, seat.tiers, seat.mode) == (D("12.00"), (), "graduated")


# -- errors -------------------------------------------------------------------------------------


def test_an_unknown_mode_lists_the_modes() -> None:
    raw = base()
    team_price(raw)["meters"]["api_calls"]["mode"] = "package"
    assert_error(
        raw, "plans.team.price.meters.api_calls.mode", "'graduated' or 'volume'", "'package'"
    )


def test_a_flat_fee_is_money() -> None:
    raw = base()
    team_price(raw)["meters"]["api_calls"]["tiers"][1]["flat"] = "2.505"
    assert_error(raw, "plans.team.price.meters.api_calls.tiers[1].flat", "3 decimal places", "USD")


def test_tiers_and_a_package_written_together() -> None:
    raw = base()
    team_price(raw)["meters"]["api_calls"]["package"] = {"size": 1000, "price": "1.00"}
    assert_error(raw, "plans.team.price.meters.api_calls.package", "tiers or by package, not both")


def test_a_package_needs_a_positive_size_and_a_price() -> None:
    raw = base()
    team_price(raw)["meters"]["api_calls"] = {"package": {"size": 0}}
    found = errors_by_path(raw)
    assert "plans.team.price.meters.api_calls.package.size" in found
    assert found["plans.team.price.meters.api_calls.package.price"] == ["required"]


def test_a_mode_with_a_package() -> None:
    raw = base()
    team_price(raw)["meters"]["api_calls"] = {
        "package": {"size": 1000, "price": "1.00"},
        "mode": "volume",
    }
    assert_error(raw, "plans.team.price.meters.api_calls.mode", "package has none")


def test_a_meter_price_with_neither_tiers_nor_package() -> None:
    raw = base()
    team_price(raw)["meters"]["api_calls"] = {"included": 10}
    assert_error(raw, "plans.team.price.meters.api_calls.tiers", "required: at least one tier")


def test_seat_unit_and_tiers_written_together() -> None:
    raw = base()
    team_price(raw)["seat"]["tiers"] = [{"unit": "10.00"}]
    assert_error(raw, "plans.team.price.seat.tiers", "unit or by tiers, not both")


def test_seat_tiers_are_checked_like_meter_tiers() -> None:
    raw = base()
    team_price(raw)["seat"] = {"tiers": [{"up_to": 10, "unit": "9.00"}, {"up_to": 10, "unit": "8"}]}
    assert_error(raw, "plans.team.price.seat.tiers[1].up_to", "greater than", "(10)")
    raw = base()
    team_price(raw)["seat"] = {"tiers": [{"unit": "9.00"}, {"unit": "8.00"}]}
    assert_error(raw, "plans.team.price.seat.tiers[0].up_to", "only the last tier")


def test_a_seat_tier_unit_is_a_rate_and_its_flat_fee_money() -> None:
    raw = base()
    team_price(raw)["seat"] = {"tiers": [{"unit": "0.0005"}]}
    # a seat tier's unit is a rate like a meter's: many decimals are allowed
    assert validate(raw).ok
    team_price(raw)["seat"]["tiers"][0]["flat"] = "0.0005"
    assert_error(raw, "plans.team.price.seat.tiers[0].flat", "decimal places")


def test_a_seat_mode_without_tiers() -> None:
    raw = base()
    team_price(raw)["seat"]["mode"] = "volume"
    assert_error(raw, "plans.team.price.seat.mode", "seats priced by unit have none")


def test_a_seat_price_with_neither_unit_nor_tiers() -> None:
    raw = base()
    team_price(raw)["seat"] = {"included": 3}
    assert_error(raw, "plans.team.price.seat.unit", "required: the price of a seat")


def test_a_priced_kind_the_plan_does_not_allow() -> None:
    raw = base()
    team_price(raw)["instances"] = {"kinds": {"cluster": "0.50", "gpu": "2.00"}}
    message = assert_error(raw, "plans.team.price.instances.kinds.gpu", "kind 'gpu'")
    assert "cluster, vm" in message
    assert "plans.team.price.instances.kinds.cluster" not in errors_by_path(raw)


def test_a_priced_kind_on_a_plan_without_instances() -> None:
    raw = base()
    raw["plans"]["solo"] = {"price": {"instances": {"kinds": {"vm": "0.02"}}}}
    assert_error(raw, "plans.solo.price.instances.kinds.vm", "no instances block")


def test_a_priced_kind_is_reported_once_on_the_plan_that_prices_it() -> None:
    raw = base()
    team_price(raw)["instances"] = {"kinds": {"gpu": "2.00"}}
    found = errors_by_path(raw)
    assert "plans.team.price.instances.kinds.gpu" in found
    assert "plans.enterprise.price.instances.kinds.gpu" not in found


def test_a_kind_any_plan_allows_when_its_kinds_are_open() -> None:
    raw = base()
    raw["plans"]["open"] = {
        "instances": {"limit": 4},
        "price": {"instances": {"kinds": {"anything": "0.10"}}},
    }
    assert validate(raw).ok


def test_a_kind_price_is_a_rate() -> None:
    raw = base()
    team_price(raw)["instances"] = {"kinds": {"vm": "0.01234567891"}}
    assert_error(raw, "plans.team.price.instances.kinds.vm", "11 decimal places")


def test_an_unknown_key_in_the_instances_price() -> None:
    raw = base()
    team_price(raw)["instances"] = {"kind": {"vm": "0.01"}}
    assert_error(raw, "plans.team.price.instances.kind", "did you mean 'kinds'?")


def test_a_minimum_is_money() -> None:
    raw = base()
    team_price(raw)["minimum"] = 500
    assert_error(raw, "plans.team.price.minimum", "quoted decimal string")
    team_price(raw)["minimum"] = "-5.00"
    assert_error(raw, "plans.team.price.minimum", "negative")


def test_a_one_time_fee_has_a_name_and_is_money() -> None:
    raw = base()
    team_price(raw)["one_time"] = {"Setup": "10.00", "training": "1.001"}
    found = errors_by_path(raw)
    assert any("is not valid: a name" in m for m in found["plans.team.price.one_time.Setup"])
    assert_error(raw, "plans.team.price.one_time.training", "3 decimal places")
