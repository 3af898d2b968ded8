"""The one source of "now" for services, so tests and the evaluator can pin time."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a `Z`, stable for hashing and responses."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def in_utc(moment: datetime, *, path: str) -> datetime:
    """`moment` (aware) in UTC, or a 422 on `path` when UTC cannot hold it (0001-01-01 with a
    positive offset, 9999-12-31 with a negative one)."""
    from allotment.errors import ValidationFailed

    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValidationFailed(
            f"`{path}` is out of range once in UTC.",
            errors=[{"path": path, "message": "out of range in UTC"}],
        ) from None


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC") from None


Instant = Annotated[AwareDatetime, AfterValidator(_utc)]
"""A request's instant: with an offset, and held in UTC (a 422 naming the field when UTC
cannot hold it: 0001-01-01 with a positive offset, 9999-12-31 with a negative one)."""


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


def _not_a_number(value: Any) -> Any:
    """Pydantic reads a number as seconds since 1970; an instant in a query is RFC 3339 text
    only, so `since=0.0` is refused rather than read as 1970-01-01."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("an RFC 3339 instant is expected (2026-12-01T00:00:00Z), not a number")
    return value


QueryInstant = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]
"""An instant in a query string: RFC 3339 text with an offset, never a bare number."""
QueryMoment = Annotated[datetime, BeforeValidator(_not_a_number)]
"""A moment in a query string (an offset optional: read as UTC without), never a number."""
