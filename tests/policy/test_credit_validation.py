"""Validation, inheritance and compilation of a plan's `price.credits` (docs/policy.md,
"Credits"). One test per error, each asserting the exact path it reports."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from allotment.policy import compile_policy, validate
from allotment.policy.catalog import DEFAULT_CREDITS_APPLY_TO, Credits
from tests.policy.documents import assert_error, base, errors_by_path


def compiled(raw: dict[str, Any]) -> Any:
    result = validate(raw)
    assert result.document is not None, result.errors
    return compile_policy(result.document)


def with_credits(credits: Any, plan: str = "team") -> dict[str, Any]:
    raw = base()
    raw["plans"][plan].setdefault("price", {})["credits"] = credits
    return raw


def test_credits_compile_with_their_defaults() -> None:
    catalog = compiled(with_credits({"monthly": "50.00", "rollover": 2, "enforce": True}))
    assert catalog.plans["team"].price.credits == Credits(
        monthly=Decimal("50.00"),
        rollover=2,
        applies_to=DEFAULT_CREDITS_APPLY_TO,
        enforce=True,
    )
    wallet_only = compiled(with_credits({"applies_to": ["meter:api_calls", "base"]}))
    credits = wallet_only.plans["team"].price.credits
    assert credits.monthly is None and credits.rollover == 0 and not credits.enforce
    assert credits.applies_to == ("meter:api_calls", "base")


def test_a_policy_without_credits_keeps_its_digest_and_has_none() -> None:
    plain = compiled(base())
    # The base document's digest before the key existed (tests/policy/test_price_validation).
    assert plain.digest == "e5cae1e2c5f1025ce3040a90cc7543dfad454fcbd4fc697ebff50780175b1a84"
    assert all(plan.price.credits is None for plan in plain.plans.values())
    assert compiled(with_credits(None)).digest == plain.digest  # null: not written


def test_a_child_inherits_credits_key_by_key_and_replaces_applies_to() -> None:
    raw = with_credits({"monthly": "50.00", "rollover": 1, "applies_to": ["meter:*", "burst"]})
    raw["plans"]["enterprise"].setdefault("price", {})["credits"] = {
        "monthly": "200.00",
        "applies_to": ["base"],
    }
    enterprise = compiled(raw).plans["enterprise"].price.credits
    assert enterprise.monthly == Decimal("200.00") and enterprise.rollover == 1
    assert enterprise.applies_to == ("base",)


@pytest.mark.parametrize(
    ("credits", "path", "fragment"),
    [
        ({"monthly": "50.001"}, "monthly", "decimal places"),
        ({"monthly": 50}, "monthly", "quoted decimal string"),
        ({"rollover": -1, "monthly": "1.00"}, "rollover", "greater than or equal to 0"),
        ({"applies_to": []}, "applies_to", "at least 1"),
        ({"applies_to": ["Meter:x"]}, "applies_to[0]", "pattern"),
        ({"enforce": "yes"}, "enforce", "boolean"),
        ({"limit": "5.00"}, "limit", ""),
    ],
)
def test_malformed_credits_name_their_path(credits: Any, path: str, fragment: str) -> None:
    assert_error(with_credits(credits), f"plans.team.price.credits.{path}", fragment)


def test_a_line_no_wallet_pays_is_refused() -> None:
    raw = with_credits({"applies_to": ["meter:*", "discount:*", "credits"]})
    found = errors_by_path(raw)
    assert "plans.team.price.credits.applies_to[0]" not in found
    assert "no line a wallet pays" in found["plans.team.price.credits.applies_to[1]"][0]
    assert "no line a wallet pays" in found["plans.team.price.credits.applies_to[2]"][0]


def test_a_named_kind_without_its_name_is_refused() -> None:
    assert_error(
        with_credits({"applies_to": ["meter:"]}),
        "plans.team.price.credits.applies_to[0]",
        "names no meter",
    )


def test_credits_for_a_meter_the_plan_does_not_price_are_refused() -> None:
    assert_error(
        with_credits({"applies_to": ["meter:api_calls", "meter:exports"]}),
        "plans.team.price.credits.applies_to[1]",
        "prices no meter 'exports'",
    )


def test_a_rollover_without_a_monthly_grant_is_refused() -> None:
    assert_error(with_credits({"rollover": 3}), "plans.team.price.credits.rollover", "monthly")
    # Inherited: the child's rollover applies to the parent's grant.
    raw = with_credits({"monthly": "10.00"})
    raw["plans"]["enterprise"].setdefault("price", {})["credits"] = {"rollover": 3}
    assert compiled(raw).plans["enterprise"].price.credits.rollover == 3
