"""Exact quantities in a policy document: an integer, or a decimal written as a quoted string.

    type          fields                                   range              decimal places
    Units         price.meters.*.included                  0 … 10^15          at most 6
    Multiplier    meters.*.multiplier                      > 0 … 10^9         at most 12
    Percentile    meters.*.percentile                      > 0 … 100          at most 4
    SurgeFactor   alerts.instance_surge.factor, …          > 1 … 1000         at most 2

A decimal is a quoted string ("0.5"), as amounts are (money.py): a YAML or JSON number with
a fraction is a binary float, and 0.1 is not 0.1. Integers stay integers in the canonical
form, so a document that writes `included: 100` keeps its digest; a decimal is written
there without trailing zeros, and an integral one ("100.0") as the integer, so two
documents meaning the same give the same form. docs/policy.md ("Meters", "Prices").
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from allotment.policy.money import decimal_places, format_amount

_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")
# A quoted negative ("-1") is read, so the range check says what the bound is.
_SIGNED = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
MAX_UNITS = 10**15
MAX_MULTIPLIER = 10**9


def _exact(value: Any) -> int | Decimal:
    if isinstance(value, bool):
        raise PydanticCustomError(
            "quantity", "a number is an integer or a quoted decimal, not {value}", {"value": value}
        )
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):  # a model built by hand
        text = format_amount(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, float):
        raise PydanticCustomError(
            "quantity",
            'a decimal is written quoted, as "{value}": a YAML or JSON number with a fraction '
            "is a binary float, which is not exact",
            {"value": value},
        )
    else:
        raise PydanticCustomError(
            "quantity",
            "a number is an integer or a quoted decimal (got {kind})",
            {"kind": type(value).__name__},
        )
    if not _SIGNED.fullmatch(text):
        raise PydanticCustomError(
            "quantity",
            "'{text}' is not a number: write digits with an optional decimal point",
            {"text": text},
        )
    return Decimal(text)


def _canonical(value: int | Decimal) -> int | Decimal:
    """An integral decimal as the integer; any other without trailing zeros."""
    if isinstance(value, int):
        return value
    if value == value.to_integral_value():
        return int(value)
    return Decimal(format_amount(value.normalize()))


def _bounded(
    value: Any, *, low: int, high: int, places: int, low_open: bool, what: str
) -> int | Decimal:
    exact = _exact(value)
    if exact < low or (low_open and exact == low) or exact > high:
        bound = f"above {low}" if low_open else f"at least {low}"
        raise PydanticCustomError(
            "quantity",
            "{what} is {bound} and at most {high}, not {value}",
            {"what": what, "bound": bound, "high": high, "value": format_amount(Decimal(exact))},
        )
    if isinstance(exact, Decimal) and decimal_places(exact.normalize()) > places:
        raise PydanticCustomError(
            "quantity",
            "'{value}' has more than {places} decimal places",
            {"value": format_amount(exact), "places": places},
        )
    return _canonical(exact)


def _units(value: Any) -> int | Decimal:
    return _bounded(value, low=0, high=MAX_UNITS, places=6, low_open=False, what="a quantity")


def _multiplier(value: Any) -> int | Decimal:
    return _bounded(
        value, low=0, high=MAX_MULTIPLIER, places=12, low_open=True, what="a multiplier"
    )


def _percentile(value: Any) -> int | Decimal:
    return _bounded(value, low=0, high=100, places=4, low_open=True, what="a percentile")


def _surge_factor(value: Any) -> int | Decimal:
    return _bounded(value, low=1, high=1000, places=2, low_open=True, what="a surge factor")


def _serialize(value: int | Decimal) -> int | str:
    return value if isinstance(value, int) else format_amount(value)


_JSON = PlainSerializer(_serialize, when_used="json")


def _schema(description: str, example: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "oneOf": [
                {"type": "integer"},
                {"type": "string", "pattern": _DECIMAL.pattern, "examples": [example]},
            ],
            "description": description,
        }
    )


Units = Annotated[
    int | Decimal,
    PlainValidator(_units),
    _JSON,
    _schema("A quantity: an integer, or a quoted decimal (at most 6 places).", "0.5"),
]
Multiplier = Annotated[
    int | Decimal,
    PlainValidator(_multiplier),
    _JSON,
    _schema("A positive factor: an integer, or a quoted decimal (at most 12 places).", "0.001"),
]
Percentile = Annotated[
    int | Decimal,
    PlainValidator(_percentile),
    _JSON,
    _schema("A percentile above 0 and at most 100 (at most 4 decimal places).", "99.9"),
]
SurgeFactor = Annotated[
    int | Decimal,
    PlainValidator(_surge_factor),
    _JSON,
    _schema("How many times the baseline a rise must exceed: above 1, at most 1000.", "1.5"),
]
