"""A meter's `filter`: a CEL condition over an event's `data`, compiled once (docs/usage.md).

    compile_filter(source)   → MeterFilter; ValueError with the CEL error text
    filter_problems(source)  → what validation reports at `meters.<name>.filter`
    MeterFilter.matches(data) → True only when the condition evaluates to true

The one variable is `data`, the event's data as sent. An event the condition does not hold
for is not counted by that meter (other meters of its type still count it). A condition that
fails to evaluate for an event (`data.os` on data without `os`, a comparison of a string with
a number) or whose result is not a boolean does not hold: the event is not counted, as
nothing proved it belongs to the meter. The same function decides at ingest and whenever a
total is read back from the events, so both agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cel

from allotment.policy.rule_fields import bound_names
from allotment.policy.rules import compile_condition

FILTER_VARIABLES = ("data",)


@dataclass(frozen=True)
class MeterFilter:
    """A compiled filter. Equality ignores the program: same source, same filter."""

    source: str
    program: cel.Program = field(compare=False, repr=False)

    def matches(self, data: Any) -> bool:
        try:
            outcome = self.program.execute({"data": data})
        except Exception:
            return False
        return outcome is True


def compile_filter(source: str) -> MeterFilter:
    return MeterFilter(source=source, program=compile_condition(source))


def filter_problems(source: str) -> list[str]:
    """Why `source` cannot be a meter's filter: it does not compile, or reads a name other
    than `data`."""
    try:
        program = compile_condition(source)
    except ValueError as exc:
        return [f"does not compile: {exc}"]
    names = set(program.variables()) - bound_names(source) - {"cel"}
    unknown = sorted(names - set(FILTER_VARIABLES))
    if unknown:
        return [
            f"unknown name {', '.join(repr(n) for n in unknown)}: a filter reads only `data`, "
            "the event's data (as in data.os == 'windows')"
        ]
    return []
