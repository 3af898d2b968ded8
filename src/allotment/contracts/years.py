"""Contract years, pure: the years an annual fee, an annual allowance and a yearly usage limit
count in, from the contract's `starts_at` (docs/contracts.md, "Contract years").

    anniversary(starts_at, n)          starts_at moved n years on; Feb 29 → Feb 28 in a
                                       common year (each anniversary from starts_at itself,
                                       so a leap year's is Feb 29 again)
    contract_year(starts_at, at)       → ContractYear holding `at` (the first, before the start)
    pieces(starts_at, start, end)      [start, end) cut at each anniversary, with its year

Contract year n (1-based) is [anniversary(n − 1), anniversary(n)), in UTC.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

LAST_YEAR = 9998  # datetime ends at year 9999: a year that starts later has no end to name


@dataclass(frozen=True)
class ContractYear:
    number: int  # 1 for the first year of the contract
    start: datetime
    end: datetime


def anniversary(starts_at: datetime, years: int) -> datetime:
    year = starts_at.year + years
    day = min(starts_at.day, calendar.monthrange(year, starts_at.month)[1])
    return starts_at.replace(year=year, day=day)


def _year(starts_at: datetime, index: int) -> ContractYear:
    return ContractYear(index + 1, anniversary(starts_at, index), anniversary(starts_at, index + 1))


def contract_year(starts_at: datetime, at: datetime) -> ContractYear:
    """The contract year holding `at`; for an instant before the start, the first year."""
    index = max(0, min(at.year - starts_at.year, LAST_YEAR - starts_at.year))
    if index > 0 and anniversary(starts_at, index) > at:
        index -= 1
    return _year(starts_at, index)


def pieces(
    starts_at: datetime, start: datetime, end: datetime
) -> list[tuple[ContractYear, datetime, datetime]]:
    """[start, end) cut at every anniversary inside it, each piece with its contract year."""
    out: list[tuple[ContractYear, datetime, datetime]] = []
    cursor = start
    while cursor < end:
        year = contract_year(starts_at, cursor)
        upper = min(end, year.end)
        if upper <= cursor:  # past the last representable year: one piece to the end
            upper = end
        out.append((year, cursor, upper))
        cursor = upper
    return out
