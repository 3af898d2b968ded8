"""Durations in a policy document: a whole number and one unit, such as `30s`, `10m`, `72h`, `14d`.

One unit per value keeps the text unambiguous to read and to compare; the canonical form
(used for digests and diffs) writes each duration in the largest unit that divides it
exactly, so `72h` and `3d` are the same value.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

DURATION_PATTERN = r"^[1-9][0-9]{0,8}[smhd]$"
UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> timedelta:
    """`10m` → 10 minutes. Raises ValueError with a message fit for a policy author."""
    if not _DURATION.fullmatch(text):
        raise ValueError(
            f"'{text}' is not a duration: write a positive whole number and one unit "
            "(s, m, h or d), such as 30s, 10m, 72h or 14d"
        )
    return timedelta(seconds=int(text[:-1]) * UNIT_SECONDS[text[-1]])


def format_duration(value: timedelta) -> str:
    """The canonical text of a duration: the largest unit that divides it exactly."""
    seconds = int(value.total_seconds())
    for unit, size in UNIT_SECONDS.items():
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds divides by 1")


def _validate(value: Any) -> timedelta:
    # Python callers may hand over a timedelta; documents always carry text, and a bare
    # number is refused because its unit would be a guess.
    if isinstance(value, timedelta):
        if value.total_seconds() <= 0 or value.total_seconds() != int(value.total_seconds()):
            raise PydanticCustomError(
                "duration", "a duration is a positive whole number of seconds"
            )
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "duration",
            "a duration is a string such as 30s, 10m, 72h or 14d (got {kind})",
            {"kind": type(value).__name__},
        )
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from None


Duration = Annotated[
    timedelta,
    PlainValidator(_validate),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A whole number and a unit: s, m, h or d (30s, 10m, 72h, 14d).",
            "examples": ["30s", "10m", "72h", "14d"],
        }
    ),
]
"""A policy duration: validated from text, held as a timedelta, written back canonically."""
