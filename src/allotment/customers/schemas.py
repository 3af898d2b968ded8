from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from allotment.config import get_settings
from allotment.kit.identifiers import CustomerKey
from allotment.kit.jsonx import canonical

MAX_DEPTH = 8


# What the API's JSON encoder (orjson) can write back: integers of 64 bits. A float is
# bounded the same: jsonb keeps numbers as `numeric`, so 1e20 reads back as an integer.
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1


def _unstorable(value: Any) -> str | None:
    """Why `value` cannot be kept as attributes (too deep; NaN or Infinity, which JSON and
    PostgreSQL do not have; an integer the response could not be written with), or None.

    Iterative: attributes arrive as deep as the JSON parser allows (~1,000 levels), deeper
    than a recursive walk or json.dumps survives."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            if level + 1 > MAX_DEPTH:
                return f"attributes nest deeper than {MAX_DEPTH} levels"
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, level + 1) for child in children)
        elif isinstance(item, float) and not math.isfinite(item):
            return "NaN and Infinity are not JSON numbers"
        elif isinstance(item, int | float) and not _MIN_INT <= item <= _MAX_INT:
            return f"numbers must lie between {_MIN_INT} and {_MAX_INT}"
    return None


def check_attributes(value: dict[str, Any]) -> dict[str, Any]:
    problem = _unstorable(value)
    if problem is not None:
        raise ValueError(problem)
    limit = get_settings().max_attributes_bytes
    size = len(canonical(value).encode())
    if size > limit:
        raise ValueError(f"attributes are {size} bytes; the limit is {limit}")
    return value


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: CustomerKey = Field(
        description="Caller-chosen: lowercase letters, digits and -_. , at most 64 characters."
    )
    name: str = Field(min_length=1, max_length=200)
    attributes: dict[str, Any] = Field(default_factory=dict)

    _attributes = field_validator("attributes")(check_attributes)


class CustomerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    attributes: dict[str, Any] | None = None

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_attributes(value)


class CustomerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    key: str
    name: str
    attributes: dict[str, Any]
    revision: int
    created_at: datetime
    updated_at: datetime
