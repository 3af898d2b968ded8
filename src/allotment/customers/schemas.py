from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from allotment.auth.principal import CUSTOMER_KEY_PATTERN
from allotment.config import get_settings
from allotment.kit.jsonx import canonical

CustomerKey = Annotated[str, StringConstraints(pattern=CUSTOMER_KEY_PATTERN)]
MAX_DEPTH = 8


def _depth(value: Any, level: int = 0) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def check_attributes(value: dict[str, Any]) -> dict[str, Any]:
    limit = get_settings().max_attributes_bytes
    size = len(canonical(value).encode())
    if size > limit:
        raise ValueError(f"attributes are {size} bytes; the limit is {limit}")
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"attributes nest deeper than {MAX_DEPTH} levels")
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
