"""Policy rules: CEL conditions a feature needs, compiled once and evaluated without raising.

A rule reads "`feature` is allowed only while `when` holds; otherwise deny with `reason`".
The check evaluator builds the activation (the variables below) for each request; a rule
that fails to evaluate — a missing attribute, a type mismatch, a result that is not a
boolean — denies, because an entitlement that cannot be proven is not granted.
Validation refuses names no check provides (`unknown_variables`) and, one level down,
fields no check provides (`rule_fields.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cel

from allotment.policy.rule_fields import bound_names

RULE_VARIABLES: Mapping[str, str] = {
    "contract": "the contract: plan, kind, attributes (plan's, overlaid by the contract's), dates",
    "customer": "the customer: key, name, attributes",
    "subject": "the user asking, with their seat (null when the request names none)",
    "instance": "the instance asking, with its kind and lease (null when none)",
    "tenant": "the tenant and its quotas (null when none)",
    "usage": "meter name → units used in the meter's current period (levels left out)",
    "seats": "the seat pool: limit, used, guests, guests_used",
    "instances": "the instance pool: limit, used (weight)",
    "now": "the check's time, a timestamp",
    "context": "the request's free-form `context` object",
}
"""The variables a rule may read, and what the check evaluator puts in each."""


def compile_condition(source: str) -> cel.Program:
    """Compile a rule's `when`. Raises ValueError carrying the CEL error text."""
    try:
        return cel.compile(source)
    except ValueError:
        raise
    except Exception as exc:  # the binding raises other types for some inputs
        raise ValueError(str(exc)) from exc


def unknown_variables(program: cel.Program) -> list[str]:
    """Top-level names the expression reads that no check provides (typos, mostly)."""
    # Macros bind their own names (`usage.exists(m, ...)`, `cel.bind(x, ...)`), which the
    # compiler lists among the expression's variables; they are not unknown names.
    bound = bound_names(program.source)
    names = program.variables()
    return sorted(set(names) - set(RULE_VARIABLES) - bound - {"cel"})


@dataclass(frozen=True)
class Rule:
    """A compiled rule. Equality ignores the program: same source, same rule."""

    feature: str
    reason: str
    source: str
    program: cel.Program = field(compare=False, repr=False)

    @classmethod
    def compile(cls, *, feature: str, reason: str, source: str) -> Rule:
        return cls(feature=feature, reason=reason, source=source, program=compile_condition(source))

    def evaluate(self, activation: Mapping[str, Any]) -> bool:
        """True when the rule allows; False (deny with `reason`) otherwise, never raising."""
        try:
            outcome = self.program.execute(dict(activation))
        except Exception:
            # Any evaluation failure denies: the rule could not prove access.
            return False
        return outcome is True

    def evaluate_in(self, context: cel.Context) -> bool:
        """`evaluate` against a prepared `cel.Context` (variables converted once, reused)."""
        try:
            outcome = self.program.execute(context)
        except Exception:
            return False
        return outcome is True
