"""Policies: the declarative catalog (features, meters, plans, add-ons, rules, prices).

The pure core, no I/O:

    module          job
    document.py     the document's models; `PolicyDocument.model_json_schema()`
    price_specs.py  the models of its price blocks (a plan's `price`, an add-on's prices)
    spec.py         the base model and the field types they share (names, counts)
    validation.py   parse YAML/JSON, validate with a path for every error
    checks.py       whole-document checks: references, cycles, inheritance, tiers, CEL
    inheritance.py  `extends`: how a plan is merged onto its parent
    compiler.py     document → immutable Catalog; digest
    catalog.py      the Catalog's frozen types
    rules.py        CEL rules: compile once, evaluate without raising
    diff.py         added / removed / changed between two documents, by path
    durations.py, money.py, graph.py, paths.py   the small pieces they share

`diff` is imported from its module (`from allotment.policy.diff import diff`) so the
name keeps meaning the module. The format is described in docs/policy.md;
`demo_policy.yaml` is a complete example.
"""

from importlib import resources

from allotment.policy.catalog import Catalog
from allotment.policy.compiler import PolicyCompileError, compile_policy, digest
from allotment.policy.document import PolicyDocument, canonical_form
from allotment.policy.rules import Rule
from allotment.policy.validation import (
    PolicyError,
    PolicySyntaxError,
    UnsupportedPolicyMediaType,
    ValidationResult,
    load,
    parse,
    validate,
)

__all__ = [
    "Catalog",
    "PolicyCompileError",
    "PolicyDocument",
    "PolicyError",
    "PolicySyntaxError",
    "Rule",
    "UnsupportedPolicyMediaType",
    "ValidationResult",
    "canonical_form",
    "compile_policy",
    "demo_policy",
    "digest",
    "load",
    "parse",
    "validate",
]


def demo_policy() -> str:
    """The demo catalog's YAML text, for `allotment demo` to publish."""
    return resources.files(__name__).joinpath("demo_policy.yaml").read_text(encoding="utf-8")
