"""The document's models: the published JSON Schema, durations and amounts."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from allotment.policy import PolicyDocument, canonical_form, validate
from allotment.policy.durations import format_duration, parse_duration
from allotment.policy.money import minor_digits
from tests.policy.documents import base


def test_json_schema_describes_every_section_and_forbids_unknown_keys() -> None:
    schema = PolicyDocument.model_json_schema()
    assert set(schema["properties"]) == {
        "currency",
        "features",
        "meters",
        "plans",
        "addons",
        "rules",
        "alerts",
    }
    assert schema["required"] == ["currency"]
    assert schema["additionalProperties"] is False
    definitions = schema["$defs"]
    assert all(
        d.get("additionalProperties") is False for d in definitions.values() if "properties" in d
    )
    window = definitions["BurstSpec"]["properties"]["window"]["anyOf"][0]
    assert window["type"] == "string" and "pattern" in window


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("72h", 259_200), ("14d", 1_209_600)],
)
def test_durations_parse_to_timedeltas(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_durations_are_written_back_in_their_largest_whole_unit() -> None:
    assert format_duration(timedelta(hours=72)) == "3d"
    assert format_duration(timedelta(minutes=90)) == "90m"
    assert format_duration(timedelta(seconds=61)) == "61s"


def test_minor_digits() -> None:
    assert [minor_digits(code) for code in ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD")] == [
        2, 2, 2, 0, 2, 2, 2,
    ]  # fmt: skip
    assert minor_digits("KWD") == 3
    assert minor_digits("XYZ") == 2


def test_validated_amounts_are_decimals_and_durations_timedeltas() -> None:
    document = validate(base()).document
    assert document is not None
    team = document.plans["team"]
    assert team.price is not None and team.price.base == Decimal("500.00")
    assert team.seats is not None and team.seats.burst is not None
    assert team.seats.burst.window == timedelta(hours=72)


def test_canonical_form_fills_defaults_and_writes_values_canonically() -> None:
    document = validate(base()).document
    assert document is not None
    form = canonical_form(document)
    assert form["features"]["reports"] == {
        "seat": "optional",
        "instance": "optional",
        "guests": False,
        "requires": [],
        "on_outage": "deny",
    }
    assert form["plans"]["team"]["seats"]["burst"]["window"] == "3d"
    assert form["plans"]["team"]["price"]["base"] == "500.00"
    assert form["plans"]["team"]["price"]["meters"]["api_calls"]["tiers"][1] == {"unit": "0.0005"}
