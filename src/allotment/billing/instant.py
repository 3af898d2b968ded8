"""The month a preview is of and the instant it is taken at, from a request's text.

period(text, now)           "2026-11" → [start, end) in UTC; a future month is a 422
as_of(value, start, now)    the instant a preview is taken at (default: now, to the second)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from allotment.errors import ValidationFailed
from allotment.kit.clock import in_utc, isoformat

_PERIOD = re.compile(r"^([0-9]{4})-([0-9]{2})$")  # ASCII: \d takes any script's digits


def period(value: str, now: datetime) -> tuple[datetime, datetime]:
    found = _PERIOD.match(value)
    year, month = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    if found is None or not 1 <= month <= 12 or year < 1:  # there is no year 0000
        raise ValidationFailed(
            f"period {value!r} is not a month: write YYYY-MM",
            errors=[{"path": "query.period", "message": "a month, as YYYY-MM"}],
        )
    start = datetime(year, month, 1, tzinfo=UTC)
    if start > now:  # before `end`, which 9999-12 has not (year 10000)
        raise ValidationFailed(
            f"period {value} has not started: a preview is of this month or an earlier one",
            errors=[{"path": "query.period", "message": "a future month"}],
        )
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if month == 12
        else datetime(year, month + 1, 1, tzinfo=UTC)
    )
    return start, end


def as_of(value: datetime | None, start: datetime, now: datetime) -> datetime:
    """The instant a preview is taken at: `value`, or now truncated to the second. It may lie
    after the period (a closed month, as finance saw it then) but not before it, nor ahead of
    now (what has not been received yet cannot be reproduced)."""
    if value is None:
        return now.replace(microsecond=0)
    if value.tzinfo is None:
        raise ValidationFailed(
            "`as_of` needs a UTC offset.",
            errors=[{"path": "query.as_of", "message": "needs an offset"}],
        )
    value = in_utc(value, path="query.as_of")  # shown in UTC: one instant, one text
    if value < start or value > now:
        where = "before the period starts" if value < start else "in the future"
        raise ValidationFailed(
            f"`as_of` {isoformat(value)} is {where}: a preview is taken within or after its "
            "period, and not later than now.",
            errors=[{"path": "query.as_of", "message": where}],
        )
    return value
