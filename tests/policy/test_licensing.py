"""Bought quantities (`basis: contracted`, `instance_licence`) and devices per seat in the
policy: what they compile to, and each error they can make, with its path."""

from __future__ import annotations

from decimal import Decimal

from allotment.policy import compile_policy, validate
from allotment.policy.document import canonical_form
from tests.policy.documents import assert_error, base, errors_by_path


def compiled(raw: dict) -> object:
    result = validate(raw)
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def test_a_document_without_the_new_keys_keeps_its_canonical_form() -> None:
    result = validate(base())
    assert result.document is not None
    form = canonical_form(result.document)
    team = form["plans"]["team"]
    # the new keys default to None and are dropped: the form, and so the digest, is unchanged
    assert set(team["price"]["seat"]) == {"unit", "basis", "included"}
    assert "instance_licence" not in team["price"]
    assert "devices_per_seat" not in team["seats"]


def test_contracted_seats_and_an_instance_licence_compile_with_their_defaults() -> None:
    raw = base()
    price = raw["plans"]["team"]["price"]
    price["seat"] = {"unit": "20.00", "basis": "contracted", "overage_unit": "30.00"}
    price["instance_licence"] = {"unit": "40.00", "basis": "contracted", "overage": "average"}
    raw["plans"]["team"]["seats"]["devices_per_seat"] = 3
    catalog = compiled(raw)
    team = catalog.plans["team"]  # type: ignore[attr-defined]
    assert team.price.seat.basis == "contracted"
    assert team.price.seat.overage == "peak"  # the default
    assert team.price.seat.overage_unit == Decimal("30.00")
    assert team.price.instance_licence.basis == "contracted"
    assert team.price.instance_licence.overage == "average"
    assert team.price.instance_licence.overage_unit is None
    assert team.seats.devices_per_seat == 3
    enterprise = catalog.plans["enterprise"]  # type: ignore[attr-defined]
    assert enterprise.price.instance_licence == team.price.instance_licence  # inherited
    assert enterprise.seats.devices_per_seat == 3


def test_an_instance_licence_defaults_to_the_peak_of_live_instances() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["instance_licence"] = {"unit": "15.50"}
    licence = compiled(raw).plans["team"].price.instance_licence  # type: ignore[attr-defined]
    assert (licence.unit, licence.basis) == (Decimal("15.50"), "peak")


def test_included_seats_under_a_contracted_basis_are_an_error() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["seat"]["basis"] = "contracted"  # included: 5 stays
    assert_error(raw, "plans.team.price.seat.included", "basis contracted", "included")
    # reported once, on the plan that owns it, not on enterprise which inherits it
    assert "plans.enterprise.price.seat.included" not in errors_by_path(raw)


def test_overage_keys_need_a_contracted_basis() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["seat"]["overage"] = "average"
    raw["plans"]["team"]["price"]["instance_licence"] = {"unit": "1.00", "overage_unit": "2.00"}
    assert_error(raw, "plans.team.price.seat.overage", "only with basis contracted", "peak")
    assert_error(
        raw, "plans.team.price.instance_licence.overage_unit", "only with basis contracted"
    )


def test_overage_cannot_itself_be_contracted() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["seat"] = {
        "unit": "20.00",
        "basis": "contracted",
        "overage": "contracted",
    }
    assert_error(raw, "plans.team.price.seat.overage", "must be", "'contracted'")


def test_an_instance_licence_needs_its_unit() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["instance_licence"] = {"basis": "peak"}
    assert_error(raw, "plans.team.price.instance_licence.unit", "required")


def test_an_instance_licence_unit_is_a_fee_in_the_minor_unit() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["instance_licence"] = {"unit": "1.005"}
    assert_error(raw, "plans.team.price.instance_licence.unit", "decimal places")


def test_devices_per_seat_is_for_named_seats_with_an_instance_pool() -> None:
    raw = base()
    raw["plans"]["floating"] = {
        "features": ["editor"],
        "seats": {"limit": 5, "model": "concurrent", "devices_per_seat": 2},
        "instances": {"limit": 3},
    }
    raw["plans"]["no_pool"] = {
        "features": ["editor"],
        "seats": {"limit": 5, "devices_per_seat": 2},
    }
    assert_error(raw, "plans.floating.seats.devices_per_seat", "concurrent")
    assert_error(raw, "plans.no_pool.seats.devices_per_seat", "no instance pool")


def test_devices_per_seat_is_a_positive_count() -> None:
    raw = base()
    raw["plans"]["team"]["seats"]["devices_per_seat"] = 0
    assert_error(raw, "plans.team.seats.devices_per_seat", "greater than 0")


def test_seat_tiers_under_a_contracted_basis_are_an_error() -> None:
    raw = base()
    raw["plans"]["team"]["price"]["seat"] = {
        "basis": "contracted",
        "tiers": [{"up_to": 10, "unit": "20.00"}, {"unit": "15.00"}],
    }
    assert_error(raw, "plans.team.price.seat.tiers", "basis contracted")
