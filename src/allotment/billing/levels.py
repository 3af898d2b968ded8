"""How a meter line prices a level (an average or a percentile meter), pure.

A count or a sum adds up over the time it is measured: its line prices the units counted.
A level is a rate held over the period (GB stored on average, hosts at the p95 hour), priced
per month like a seat: its line prices max(0, level − included) through the tiers, times
the group's fee fraction — the share of the month the group's fees run (to the month's end
for the current month, where the level so far stands for the month). docs/billing.md
("Levels") works an example.

    level_terms(level, fee_fraction, fee_days)   → LevelTerms: the factor, and what the line
                                                   adds to its description and source
    json_units(included)                         → an int, or a decimal as a string
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

from allotment.billing.measure import days, text
from allotment.policy.money import format_amount


@dataclass(frozen=True)
class LevelTerms:
    fraction: Fraction = Fraction(1)
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict)


_ADDS_UP = LevelTerms()


def level_terms(level: bool, fee_fraction: Fraction, fee_days: Fraction) -> LevelTerms:
    """The factor a meter line's tiered amount is multiplied by: 1 for a meter that adds up,
    the fee fraction for a level."""
    if not level:
        return _ADDS_UP
    return LevelTerms(
        fraction=fee_fraction,
        description=f", a level priced per month, for {days(fee_days)} days",
        source={"level": True, "fraction": text(fee_fraction), "active_days": text(fee_days)},
    )


def json_units(value: int | Decimal) -> int | str:
    """`included` in a line's source: JSON types only, an integer as before."""
    return value if isinstance(value, int) else format_amount(value)
