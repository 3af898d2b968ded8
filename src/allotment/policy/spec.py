"""What every model of the policy document is built from (docs/policy.md).

    Spec                          the base: unknown keys are errors, types as written, nulls
                                  not written
    Name, FeatureEntry            lowercase identifiers (NAME_PATTERN, FEATURE_ENTRY_PATTERN)
    Currency, BoughtQuantity      an ISO 4217 code; `seats` or `instances`
    NonNegative, Positive, Volume counts bounded by MAX_COUNT, volumes by MAX_VOLUME
    AttributeValue                a plan attribute: a string, an integer or a boolean

document.py and price_specs.py build the document's models on these; contracts, tenants,
ofrep and kit/identifiers take a catalog name's syntax (and contracts the attribute values)
from here too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from allotment.policy.money import CURRENCY_PATTERN

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
FEATURE_ENTRY_PATTERN = r"^[+-]?[a-z][a-z0-9_]{0,62}$"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A feature, meter, plan, add-on, kind or attribute name: a lowercase identifier."""

FeatureEntry = Annotated[str, StringConstraints(pattern=FEATURE_ENTRY_PATTERN)]
"""A plan's feature entry: `name`, or `+name` / `-name` in a plan that extends another."""

Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN)]
BoughtQuantity = Literal["seats", "instances"]  # a contract's `quantities` key
# Bounds. Counts the service stores and enforces (seats, kind weights, meter limits) go as
# far as a contract's own terms may (contracts/schemas.py `Count`); pricing volumes as far
# as any invoice line can. Unbounded, a 10^20 published and then failed every assignment,
# check or invoice on the plan: database integers, the JSON encoder's 64 bits.
MAX_COUNT = 1_000_000_000
MAX_VOLUME = 10**15
NonNegative = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Positive = Annotated[int, Field(gt=0, le=MAX_COUNT)]
Volume = Annotated[int, Field(ge=0, le=MAX_VOLUME)]


def _attribute_value(value: Any) -> str | int | bool:
    # One validator rather than a union, so an error points at the attribute itself and
    # not at a union member.
    if isinstance(value, str | int | bool):
        return value
    raise PydanticCustomError(
        "attribute",
        "an attribute is a string, an integer or a boolean (got {kind})",
        {"kind": type(value).__name__},
    )


AttributeValue = Annotated[
    str | int | bool,
    PlainValidator(_attribute_value),
    WithJsonSchema({"type": ["string", "integer", "boolean"]}),
]


class Spec(BaseModel):
    """Base of every document model: unknown keys are errors, types are taken as written."""

    # strict: YAML and JSON already carry types, so "10" where a count belongs is a mistake
    # to report, not a string to convert.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_not_written(cls, value: Any) -> Any:
        # `features:` left empty in YAML is a null; everywhere, a null means "not written"
        # (the default applies, a required key is missing), as the canonical form drops it.
        if isinstance(value, dict):
            return {key: item for key, item in value.items() if item is not None}
        return value
