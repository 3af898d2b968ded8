"""One-time fees and yearly add-ons per bought quantity, and yearly percentages, in the
policy: each compiles as docs/policy.md says and each error is reported at its path."""

from __future__ import annotations

from typing import Any

import pytest

from allotment.policy import compile_policy, validate
from tests.policy.documents import assert_error


def document(**addons: Any) -> dict[str, Any]:
    return {
        "currency": "USD",
        "plans": {
            "site": {
                "price": {
                    "one_time": {"licence": "3000.00", "setup": "500.00"},
                    "one_time_per": {"licence": "seats"},
                }
            }
        },
        "addons": {
            "care": {"price": "100.00", "interval": "year", "per": "instances"},
            "support": {"price": "10.00"},
            **addons,
        },
    }


def test_per_quantity_fees_and_a_yearly_percentage_compile() -> None:
    raw = document(
        maintenance={"percent": 20, "interval": "year", "of": ["one_time:licence", "addon:care"]}
    )
    result = validate(raw)
    assert result.errors == [] and result.document is not None
    compiled = compile_policy(result.document)
    assert dict(compiled.plans["site"].price.one_time_per) == {"licence": "seats"}
    assert compiled.addons["care"].per == "instances"
    maintenance = compiled.addons["maintenance"]
    assert maintenance.interval == "year" and maintenance.pricing is not None
    assert maintenance.pricing.of == ("one_time:licence", "addon:care")


@pytest.mark.parametrize(
    ("addon", "path", "fragments"),
    [
        ({"price": "10.00", "per": "seats"}, "addons.probe.per", ("a yearly fee",)),
        (
            {"percent": 5, "of": ["addon:care"], "interval": "year", "per": "seats"},
            "addons.probe.per",
            ("a yearly fee",),
        ),
        ({"price": "10.00", "interval": "year", "per": "users"}, "addons.probe.per", ("must be",)),
        (
            {"percent": 5, "interval": "year", "of": ["base"]},
            "addons.probe.of[0]",
            ("a yearly percentage", "one_time:<fee>"),
        ),
        (
            {"percent": 5, "interval": "year", "of": ["one_time:licnce"]},
            "addons.probe.of[0]",
            ("unknown one-time fee 'licnce'", "did you mean 'licence'"),
        ),
        (
            {"percent": 5, "interval": "year", "of": ["addon:support"]},
            "addons.probe.of[0]",
            ("not a yearly fee",),
        ),
        (
            {"percent": 5, "of": ["one_time:licence"]},
            "addons.probe.of[0]",
            ("charged once", "interval: year"),
        ),
        (
            {"percent": 5, "of": ["addon:care"]},
            "addons.probe.of[0]",
            ("billed yearly", "interval: year"),
        ),
    ],
)
def test_each_error_has_its_path(addon: dict[str, Any], path: str, fragments: tuple[str]) -> None:
    assert_error(document(probe=addon), path, *fragments)


def test_one_time_per_names_a_one_time_fee_of_the_plan() -> None:
    raw = document()
    raw["plans"]["site"]["price"]["one_time_per"]["sedup"] = "instances"
    assert_error(raw, "plans.site.price.one_time_per.sedup", "no one-time fee 'sedup'")
