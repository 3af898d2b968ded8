"""Priced add-ons and their allowances in the policy: each new key compiles as docs/policy.md
says, each error is reported at its path, and a document that uses none keeps its digest."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from allotment.policy import compile_policy, validate
from allotment.policy.catalog import NO_RAISES, AddonPrice
from tests.policy.documents import assert_error, base, errors_by_path

GPU = {"event_type": "gpu.used", "aggregation": "sum", "property": "minutes"}


def priced() -> dict[str, Any]:
    raw = base()
    raw["meters"]["gpu_minutes"] = GPU
    raw["addons"].update(
        {
            "support": {"per_seat": {"unit": "4.00"}},
            "apm": {"per_instance": {"unit": "31.00", "basis": "average"}},
            "gpu": {"per_unit": {"meter": "gpu_minutes", "unit": "0.0125"}},
            "maintenance": {"percent": 20, "of": ["base", "seats", "addon:support"]},
            "growth": {
                "price": "40.00",
                "raises": {
                    "seats": 5,
                    "instances": 2,
                    "limits": {"api_calls": 50_000},
                    "included": {"api_calls": 10_000, "gpu_minutes": 60},
                },
            },
        }
    )
    return raw


def test_every_pricing_and_allowance_compiles() -> None:
    result = validate(priced())
    assert result.errors == []
    assert result.document is not None
    addons = compile_policy(result.document).addons
    assert addons["audit_pack"].pricing is None and addons["audit_pack"].price == Decimal("100.00")
    assert addons["audit_pack"].raises is NO_RAISES
    assert addons["support"].pricing == AddonPrice("seat", Decimal("4.00"))
    assert addons["apm"].pricing == AddonPrice("instance", Decimal("31.00"), basis="average")
    assert addons["gpu"].pricing == AddonPrice("unit", Decimal("0.0125"), meter="gpu_minutes")
    assert addons["maintenance"].pricing == AddonPrice(
        "percent", Decimal(20), of=("base", "seats", "addon:support")
    )
    growth = addons["growth"]
    assert growth.price == Decimal("40.00") and growth.pricing is None
    assert (growth.raises.seats, growth.raises.instances) == (5, 2)
    assert dict(growth.raises.limits) == {"api_calls": 50_000}
    assert dict(growth.raises.included) == {"api_calls": 10_000, "gpu_minutes": 60}


def test_a_document_without_the_new_keys_keeps_its_digest() -> None:
    before = validate(base()).document
    assert before is not None
    spelled = base()
    spelled["addons"]["audit_pack"].update({"per_seat": None, "raises": None, "percent": None})
    after = validate(spelled).document
    assert after is not None
    assert compile_policy(after).digest == compile_policy(before).digest


def test_a_percentage_written_as_a_number_or_a_string_is_the_same() -> None:
    as_number, as_text = priced(), priced()
    as_text["addons"]["maintenance"]["percent"] = "20"
    first, second = validate(as_number).document, validate(as_text).document
    assert first is not None and second is not None
    assert compile_policy(first).digest == compile_policy(second).digest


def _with(**addon: Any) -> dict[str, Any]:
    raw = priced()
    raw["addons"]["probe"] = addon
    return raw


@pytest.mark.parametrize(
    ("addon", "path", "fragments"),
    [
        (
            {"price": "1.00", "per_seat": {"unit": "1.00"}},
            "addons.probe",
            ("priced one way", "price and per_seat"),
        ),
        ({"percent": 20}, "addons.probe.of", ("required with percent",)),
        ({"of": ["base"]}, "addons.probe.of", ("only with percent",)),
        ({"percent": 0, "of": ["base"]}, "addons.probe.percent", ("above 0 and at most 100",)),
        ({"percent": "120", "of": ["base"]}, "addons.probe.percent", ("at most 100",)),
        ({"percent": "12.34567", "of": ["base"]}, "addons.probe.percent", ("at most 4",)),
        ({"percent": 12.5, "of": ["base"]}, "addons.probe.percent", ("quoted decimal",)),
        ({"percent": 20, "of": []}, "addons.probe.of", ("at least 1",)),
        ({"percent": 20, "of": ["licence"]}, "addons.probe.of[0]", ("not a line code",)),
        ({"percent": 20, "of": ["meter:api_cals"]}, "addons.probe.of[0]", ("unknown meter",)),
        (
            {"percent": 20, "of": ["meter:exports"]},
            "addons.probe.of[0]",
            ("no plan prices meter 'exports'",),
        ),
        (
            {"percent": 20, "of": ["meter:gpu_minutes"]},
            "addons.probe.of[0]",
            ("no plan prices meter 'gpu_minutes'", "addon:<its name>"),
        ),
        ({"percent": 20, "of": ["addon:gpu", "addon:growth"]}, None, ()),
        ({"percent": 20, "of": ["addon:nope"]}, "addons.probe.of[0]", ("unknown add-on",)),
        (
            {"percent": 20, "of": ["instances:gpu"]},
            "addons.probe.of[0]",
            ("no plan prices instances of kind 'gpu' apart",),
        ),
        ({"percent": 20, "of": ["minimum"]}, "addons.probe.of[0]", ("not a line code",)),
        (
            {"per_seat": {"unit": "1.00"}, "interval": "year"},
            "addons.probe.interval",
            ("interval is of `price`", "per_seat takes none"),
        ),
        (
            {"percent": 20, "of": ["base"], "price_lists": {"EUR": "1.00"}},
            "addons.probe.price_lists",
            ("price_lists is of `price`",),
        ),
        ({"price": "120.00", "interval": "year", "price_lists": {"EUR": "110.00"}}, None, ()),
        (
            {"percent": 20, "of": ["instance_licences"]},
            "addons.probe.of[0]",
            ("no plan has price.instance_licence",),
        ),
        (
            {"percent": 20, "of": ["seats_overage"]},
            "addons.probe.of[0]",
            ("no plan prices seats on basis contracted",),
        ),
        ({"percent": 20, "of": ["addon:probe"]}, "addons.probe.of[0]", ("not a percentage of",)),
        (
            {"percent": 20, "of": ["addon:maintenance"]},
            "addons.probe.of[0]",
            ("is a percentage too",),
        ),
        ({"percent": 20, "of": ["base", "base"]}, "addons.probe.of[1]", ("listed twice",)),
        ({"per_seat": {"unit": "1.234"}}, "addons.probe.per_seat.unit", ("USD allows at most 2",)),
        ({"per_seat": {}}, "addons.probe.per_seat.unit", ("required",)),
        (
            {"per_instance": {"unit": "1.00", "basis": "p90"}},
            "addons.probe.per_instance.basis",
            ("must be",),
        ),
        (
            {"per_unit": {"meter": "gpu_minute", "unit": "0.1"}},
            "addons.probe.per_unit.meter",
            ("unknown meter", "did you mean 'gpu_minutes'"),
        ),
        (
            {"per_unit": {"meter": "api_calls", "unit": "0.1"}},
            "addons.probe.per_unit.meter",
            ("plan 'team' prices meter 'api_calls' already",),
        ),
        ({"raises": {"seats": -1}}, "addons.probe.raises.seats", ("greater than or equal",)),
        ({"raises": {"sets": 1}}, "addons.probe.raises.sets", ("did you mean 'seats'",)),
        (
            {"raises": {"limits": {"storage": 1}}},
            "addons.probe.raises.limits.storage",
            ("unknown meter",),
        ),
        (
            {"raises": {"included": {"exports": 1}}},
            "addons.probe.raises.included.exports",
            ("no plan or add-on prices meter 'exports'",),
        ),
    ],
)
def test_each_addon_error_is_reported_at_its_path(
    addon: dict[str, Any], path: str | None, fragments: tuple[str, ...]
) -> None:
    if path is None:  # the valid neighbour of an error above
        assert errors_by_path(_with(**addon)) == {}
    else:
        assert_error(_with(**addon), path, *fragments)


def test_seats_in_of_needs_a_plan_that_prices_seats() -> None:
    raw = priced()
    del raw["plans"]["team"]["price"]["seat"]
    found = errors_by_path(raw)
    assert found == {
        "addons.maintenance.of[1]": ["no plan prices seats (price.seat), so there is no seats line"]
    }


def test_a_level_takes_no_raised_limit_and_included_units_may_be_decimals() -> None:
    raw = priced()
    raw["meters"]["storage"] = {
        "event_type": "storage.used",
        "aggregation": "average",
        "property": "gb",
    }
    raw["plans"]["team"]["price"]["meters"]["storage"] = {"tiers": [{"unit": "0.10"}]}
    raw["addons"]["probe"] = {"raises": {"limits": {"storage": 10}}}
    assert_error(raw, "addons.probe.raises.limits.storage", "is a level", "no limit")
    raw["addons"]["probe"] = {"raises": {"included": {"storage": "0.5"}}}
    result = validate(raw)
    assert result.errors == [] and result.document is not None
    raises = compile_policy(result.document).addons["probe"].raises
    assert raises.included["storage"] == Decimal("0.5")


def test_a_percentage_of_an_instance_kind_priced_apart() -> None:
    raw = priced()
    raw["plans"]["team"]["price"]["instances"] = {"kinds": {"cluster": "0.40"}}
    raw["addons"]["probe"] = {"percent": 15, "of": ["instances:cluster", "instances"]}
    assert validate(raw).errors == []


def test_maintenance_of_bought_licences() -> None:
    """The on-prem shape: seats and instance licences bought, maintenance a percentage of
    them and of their overage."""
    raw = priced()
    raw["plans"]["team"]["price"]["seat"] = {"unit": "20.00", "basis": "contracted"}
    raw["plans"]["team"]["price"]["instance_licence"] = {"unit": "100.00", "basis": "contracted"}
    raw["addons"]["maintenance"] = {
        "percent": 20,
        "of": ["seats", "seats_overage", "instance_licences", "instance_licences_overage"],
    }
    raw["addons"]["support"] = {"per_seat": {"unit": "4.00", "basis": "contracted"}}
    assert validate(raw).errors == []
