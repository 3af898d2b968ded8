"""Money in a policy document: quoted decimal strings, checked against the currency's minor unit.

Two kinds of amount appear in prices:

    kind    fields                                               decimal places
    fee     price.base, price.seat.unit, price.burst_seat_day,   at most the currency's
            price.minimum, price.one_time.*, tiers[].flat,       minor unit (USD 2, JPY 0)
            price.meters.*.package.price, price.seat.overage_unit,
            price.instance_licence.{unit, overage_unit}, addons.*.price
    rate    price.instance_hour, price.instances.kinds.*,        at most RATE_MAX_PLACES
            price.meters.*.tiers[].unit, price.seat.tiers[].unit

A price list (`plans.<p>.price_lists.<code>`, `addons.<a>.price_lists.<code>`) holds fees
in its own currency: they are checked against that currency's minor unit (JPY 0, KWD 3),
not the document's. `PriceLists` does it: validating an entry's key records the currency
for the fees of its value (pydantic validates a mapping's key, then its value, entry by
entry).

Rates are per unit of usage (an API call, an instance-hour) and are routinely fractions of
the minor unit ("0.0005" per call); billing rounds each line, never each unit (docs/billing.md).
Amounts are strings because a YAML or JSON number is a binary float: `0.1` is not 0.1. A
percentage (`addons.*.percent`) may be a whole number as well (`20`), or a string with at most
PERCENT_MAX_PLACES decimals (`"12.5"`), above 0 and at most 100.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

DEFAULT_MINOR_DIGITS = 2
RATE_MAX_PLACES = 10
PERCENT_MAX_PLACES = 4
CURRENCY_PATTERN = r"^[A-Z]{3}$"
AMOUNT_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)
_CURRENCY = re.compile(CURRENCY_PATTERN)
# The currency of the price list being validated: None outside one, "" for a key that is
# not a currency code (its fees are then checked for syntax only; the key is the error).
_LISTED: ContextVar[str | None] = ContextVar("allotment_price_list_currency", default=None)

# ISO 4217 minor units for the codes that differ from the common 2, plus the usual ones
# spelled out so a reader need not know the default.
MINOR_DIGITS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SEK": 2,
    "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "INR": 2, "CNY": 2, "BRL": 2, "MXN": 2,
    "SGD": 2, "HKD": 2, "ZAR": 2,
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "PYG": 0, "UGX": 0, "XAF": 0, "XOF": 0,
    "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3, "LYD": 3, "IQD": 3,
}  # fmt: skip


def minor_digits(currency: str) -> int:
    """Decimal places of the currency's minor unit (USD 2, JPY 0, KWD 3; unknown codes 2)."""
    return MINOR_DIGITS.get(currency, DEFAULT_MINOR_DIGITS)


def decimal_places(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def parse_amount(text: str) -> Decimal:
    """`"500.00"` → Decimal('500.00'). Raises ValueError for negatives and non-numbers."""
    if text.startswith("-"):
        raise ValueError(f"'{text}' is negative; prices are never below zero")
    if not _AMOUNT.fullmatch(text):
        raise ValueError(f"'{text}' is not an amount: write digits with an optional decimal point")
    return Decimal(text)


def format_amount(amount: Decimal) -> str:
    # Fixed-point, never scientific: str(Decimal("0.0000001")) would be "1E-7".
    return format(amount, "f")


def _coerce(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        if not value.is_finite() or value < 0:
            raise PydanticCustomError("money", "an amount is a finite number, never below zero")
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "money",
            'an amount is a quoted decimal string such as "500.00" (got {kind}): '
            "numbers in YAML and JSON are binary floats and lose cents",
            {"kind": type(value).__name__},
        )
    try:
        return parse_amount(value)
    except ValueError as exc:
        raise PydanticCustomError("money", str(exc)) from None


def _validate_fee(value: Any, info: ValidationInfo) -> Decimal:
    amount = _coerce(value)
    # validate() passes the document's currency in the context; without it (a model built
    # by hand) only the syntax is checked.
    context = info.context if isinstance(info.context, dict) else {}
    listed = _LISTED.get()
    if listed is not None:  # inside a price list: its own currency
        context = {"currency": listed, "minor_digits": minor_digits(listed)} if listed else {}
    digits = context.get("minor_digits")
    if isinstance(digits, int) and decimal_places(amount) > digits:
        raise PydanticCustomError(
            "money",
            "'{amount}' has {places} decimal places; {currency} allows at most {digits}",
            {
                "amount": format_amount(amount),
                "places": decimal_places(amount),
                "currency": context.get("currency", "the currency"),
                "digits": digits,
            },
        )
    return amount


def _validate_rate(value: Any) -> Decimal:
    amount = _coerce(value)
    if decimal_places(amount) > RATE_MAX_PLACES:
        raise PydanticCustomError(
            "money",
            "'{amount}' has {places} decimal places; a rate allows at most {limit}",
            {
                "amount": format_amount(amount),
                "places": decimal_places(amount),
                "limit": RATE_MAX_PLACES,
            },
        )
    return amount


_serialize = PlainSerializer(format_amount, return_type=str, when_used="json")

Money = Annotated[
    Decimal,
    PlainValidator(_validate_fee),
    _serialize,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": AMOUNT_PATTERN,
            "description": "A fee: at most the currency's minor-unit decimal places.",
            "examples": ["500.00"],
        }
    ),
]
"""A fee: a non-negative decimal string with at most the currency's minor-unit digits."""

Rate = Annotated[
    Decimal,
    PlainValidator(_validate_rate),
    _serialize,
    WithJsonSchema(
        {
            "type": "string",
            "pattern": AMOUNT_PATTERN,
            "description": f"A per-unit rate: at most {RATE_MAX_PLACES} decimal places.",
            "examples": ["0.0005"],
        }
    ),
]
"""A per-unit rate: a non-negative decimal string with at most RATE_MAX_PLACES digits."""


def _list_currency(value: Any) -> str:
    valid = isinstance(value, str) and _CURRENCY.fullmatch(value) is not None
    _LISTED.set(value if valid else "")
    if not valid:
        raise PydanticCustomError("currency", "a price list's key is an ISO 4217 code, as EUR")
    return str(value)


def _price_lists(value: Any, handler: Any) -> Any:
    token = _LISTED.set(None)
    try:
        return handler(value)
    finally:
        _LISTED.reset(token)


ListCurrency = Annotated[
    str,
    PlainValidator(_list_currency),
    WithJsonSchema({"type": "string", "pattern": CURRENCY_PATTERN}),
]
"""A price list's currency: validating it sets the minor unit its fees are checked against."""

PriceListsGuard = WrapValidator(_price_lists)
"""Put on a `dict[ListCurrency, ...]`: no price list's currency leaks past the mapping."""


def _validate_percentage(value: Any) -> Decimal:
    if isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, str | Decimal):
        amount = _coerce(value)
    else:
        raise PydanticCustomError(
            "money",
            'a percentage is a whole number or a quoted decimal such as "12.5" (got {kind})',
            {"kind": type(value).__name__},
        )
    if not 0 < amount <= 100:
        raise PydanticCustomError(
            "money",
            "'{amount}' is not a percentage above 0 and at most 100",
            {"amount": format_amount(amount)},
        )
    if decimal_places(amount) > PERCENT_MAX_PLACES:
        raise PydanticCustomError(
            "money",
            "'{amount}' has {places} decimal places; a percentage allows at most {limit}",
            {
                "amount": format_amount(amount),
                "places": decimal_places(amount),
                "limit": PERCENT_MAX_PLACES,
            },
        )
    return amount


Percentage = Annotated[
    Decimal,
    PlainValidator(_validate_percentage),
    _serialize,
    WithJsonSchema(
        {
            "type": ["integer", "string"],
            "pattern": AMOUNT_PATTERN,
            "description": "A percentage above 0 and at most 100: a whole number, or a quoted "
            f"decimal with at most {PERCENT_MAX_PLACES} places.",
            "examples": [20, "12.5"],
        }
    ),
]
"""A percentage in (0, 100]: an integer or a decimal string."""
