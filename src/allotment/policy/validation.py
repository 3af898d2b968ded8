"""Policy validation: every error in a YAML or JSON policy, in one pass, each with its path.

    parse(text, media_type)   → a raw value (YAML or JSON), or PolicySyntaxError at path `$`
    validate(raw)             → ValidationResult(document, errors)
    load(text, media_type)    → both: what `POST /v1/policies` and `allotment policy validate` need

An error is `{"path": "plans.team.seats.burst.window", "message": "..."}`; paths are
written as `paths.format_path` describes. The model's own errors (unknown keys, types,
syntax of names, durations, amounts) and the whole-document checks of `checks.py` are
reported together; a document is returned only when there are none. A rule that compiles
and names only check variables is then scanned for fields no check provides
(`contract.foo`, `usage.unknown_meter`: see `rule_fields.py`), each an error at
`rules[i].when`.
"""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from allotment.policy.checks import check_document, level_meters
from allotment.policy.document import PolicyDocument, fill_empty_entries
from allotment.policy.money import CURRENCY_PATTERN, minor_digits
from allotment.policy.paths import ROOT, Location, format_path
from allotment.policy.rule_fields import field_errors
from allotment.policy.rules import compile_condition, unknown_variables
from allotment.policy.spec import FEATURE_ENTRY_PATTERN, NAME_PATTERN

YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
JSON_MEDIA_TYPES = frozenset({"application/json", "text/json"})

# A policy is a few kilobytes. Bounds on what its text expands to: YAML aliases can repeat
# a value (a long string, a nested list) any number of times at the cost of a few bytes
# each, so a body under the size limit could otherwise become gigabytes once validated,
# stored and hashed ("billion laughs"); and no walk of the document may overflow the stack.
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_EXPANDED_CHARS = 4 * 1024 * 1024


class PolicyError(TypedDict):
    path: str
    message: str


@dataclass(frozen=True)
class ValidationResult:
    document: PolicyDocument | None
    errors: list[PolicyError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class PolicySyntaxError(ValueError):
    """The text is not YAML or JSON at all; `errors` holds one error at path `$`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errors: list[PolicyError] = [{"path": ROOT, "message": message}]


class UnsupportedPolicyMediaType(ValueError):
    """The media type is neither YAML nor JSON (the API answers 415)."""


def parse(text: str | bytes, media_type: str) -> object:
    """Parse a policy's text as YAML or JSON, by media type (`+json` / `+yaml` suffixes too).

    Duplicate keys are errors, not last-one-wins, since a silently dropped plan is worse
    than a refused document.
    """
    kind = _kind(media_type)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PolicySyntaxError(f"the document is not UTF-8: {exc}") from None
    try:
        if kind == "json":
            raw = json.loads(text, object_pairs_hook=_unique_json_object)
        else:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except PolicySyntaxError:
        raise
    except json.JSONDecodeError as exc:
        raise PolicySyntaxError(f"invalid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise PolicySyntaxError(_yaml_message(exc)) from None
    except RecursionError:
        raise PolicySyntaxError(f"the document nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # int() of a number with thousands of digits
        raise PolicySyntaxError(f"invalid {kind.upper()}: {exc}") from None
    _check_size(raw)
    return raw


def _check_size(raw: object) -> None:
    """Raise PolicySyntaxError when `raw`, counted with every alias expanded, nests deeper
    than MAX_DEPTH, or holds more than MAX_NODES values or MAX_EXPANDED_CHARS of text.
    Iterative, and stops at the first bound crossed: a bomb costs only the budget."""
    pending: list[tuple[object, int]] = [(raw, 1)]
    nodes = chars = 0
    while pending:
        value, depth = pending.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise PolicySyntaxError(f"the document nests deeper than {MAX_DEPTH} levels")
        if nodes > MAX_NODES or chars > MAX_EXPANDED_CHARS:
            raise PolicySyntaxError(
                f"the document expands to more than {MAX_NODES} values or "
                f"{MAX_EXPANDED_CHARS} characters (YAML aliases count once per use)"
            )
        if isinstance(value, Mapping):
            for key, item in value.items():
                chars += len(key) if isinstance(key, str) else 8
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            chars += len(value)


def load(text: str | bytes, media_type: str) -> ValidationResult:
    """Parse and validate; a syntax error becomes the result's only error."""
    try:
        raw = parse(text, media_type)
    except PolicySyntaxError as exc:
        return ValidationResult(document=None, errors=list(exc.errors))
    return validate(raw)


def validate(raw: object, *, stored: bool = False) -> ValidationResult:
    """Validate a parsed policy: every error with its path, or the document.

    `stored=True` for a version the service already holds (see `checks.check_document`).
    """
    if not isinstance(raw, Mapping):
        kind = "nothing" if raw is None else f"a {type(raw).__name__}"
        return ValidationResult(
            document=None,
            errors=[{"path": ROOT, "message": f"a policy is a mapping of sections, not {kind}"}],
        )
    raw = fill_empty_entries(raw)
    currency = raw.get("currency")
    context: dict[str, Any] = {}
    if isinstance(currency, str) and _CURRENCY.fullmatch(currency):
        context = {"currency": currency, "minor_digits": minor_digits(currency)}

    findings: list[tuple[str, str]] = []
    document: PolicyDocument | None = None
    try:
        document = PolicyDocument.model_validate(raw, context=context)
    except ValidationError as exc:
        findings.extend(_from_pydantic(error) for error in exc.errors(include_url=False))
    findings.extend(
        (format_path(location), message) for location, message in check_document(raw, stored=stored)
    )
    if not stored:  # a version stored before the field check still loads (its rule denies)
        findings.extend((format_path(location), message) for location, message in _rule_fields(raw))

    errors: list[PolicyError] = [
        {"path": path, "message": message} for path, message in dict.fromkeys(findings)
    ]
    return ValidationResult(document=None if errors else document, errors=errors)


def _rule_fields(raw: Mapping[str, Any]) -> list[tuple[Location, str]]:
    """Each field a rule reads that no check provides. Rules that do not compile or name
    an unknown variable are left to `check_document`, which reports them."""
    rules = raw.get("rules")
    if not isinstance(rules, list):
        return []
    meters = raw.get("meters")
    # `usage` holds the meters a check reads: not the levels (averages, percentiles).
    meter_names = (
        {name for name in meters if isinstance(name, str)} - level_meters(meters)
        if isinstance(meters, Mapping)
        else set()
    )
    found: list[tuple[Location, str]] = []
    for index, rule in enumerate(rules):
        source = rule.get("when") if isinstance(rule, Mapping) else None
        if not isinstance(source, str) or not source:
            continue
        try:
            program = compile_condition(source)
        except ValueError:
            continue
        if unknown_variables(program):
            continue
        found.extend((("rules", index, "when"), m) for m in field_errors(source, meter_names))
    return found


def _kind(media_type: str) -> str:
    essence = media_type.split(";", 1)[0].strip().lower()
    if essence in JSON_MEDIA_TYPES or essence.endswith("+json"):
        return "json"
    if essence in YAML_MEDIA_TYPES or essence.endswith("+yaml"):
        return "yaml"
    raise UnsupportedPolicyMediaType(
        f"'{media_type}' is not a policy media type: send application/json or application/yaml"
    )


def _unique_json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            # The hook is not told where the object is; a message without a line beats a
            # wrong one.
            raise PolicySyntaxError(f"invalid JSON: duplicate key {key!r}")
        mapping[key] = value
    return mapping


def _yaml_message(error: yaml.YAMLError) -> str:
    """`invalid YAML at line 3, column 5: found duplicate key 'team'` — one line, 1-based."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return f"invalid YAML: {error}"
    mark = error.problem_mark
    message = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
    if error.context:
        where = error.context_mark
        since = f" from line {where.line + 1}" if where is not None else ""
        message += f" ({error.context}{since})"
    return message


_YAML_MERGE = "tag:yaml.org,2002:merge"


# libyaml's parser when it is built in (several times faster), the pure-Python one otherwise;
# both construct with SafeConstructor, so both load the same safe subset of YAML.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[misc]  # PyYAML is untyped
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # Only the keys written in this mapping: `<<: *anchor` merges may be overridden.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _YAML_MERGE:
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


# -- pydantic's errors, in the policy's words ------------------------------------------------

_CURRENCY = re.compile(CURRENCY_PATTERN)
# Our own validators (durations, amounts, attributes) already name the offending value.
_OWN_ERRORS = frozenset({"duration", "money", "attribute", "quantity"})
_PATTERN_MESSAGES = {
    NAME_PATTERN: "a name is a lowercase letter, then lowercase letters, digits or _ "
    "(at most 63 characters)",
    FEATURE_ENTRY_PATTERN: "a feature entry is a name, or +name / -name in a plan that "
    "extends another",
    CURRENCY_PATTERN: "a currency is an ISO 4217 code: three capital letters, such as USD",
}


def _from_pydantic(error: ErrorDetails) -> tuple[str, str]:
    location: Location = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    context = error.get("ctx") or {}
    if kind == "invalid_key" or (location and location[-1] == "[key]"):
        # The key itself is wrong: point at it. A YAML key such as `3` or `yes` arrives as a
        # number or a boolean; quoted, it cannot read as a list index.
        if location and location[-1] == "[key]":
            location = location[:-1]
        if not isinstance(value, str):
            location = (*location[:-1], json.dumps(value, default=str))
            return format_path(location), (
                f"a key is a string, not {value!r}: quote it (YAML reads bare numbers and "
                "yes / no / on / off as other types)"
            )
    if kind == "extra_forbidden":
        return format_path(location), _unknown_key(location)
    if kind == "missing":
        return format_path(location), "required"
    if kind == "string_pattern_mismatch" and context.get("pattern") in _PATTERN_MESSAGES:
        return format_path(location), f"{value!r} is not valid: " + _PATTERN_MESSAGES[
            context["pattern"]
        ]
    if kind == "literal_error":
        return format_path(location), f"must be {context.get('expected')}, not {value!r}"
    if kind in ("model_type", "dict_type"):
        return format_path(location), f"must be a mapping of keys to values, not {value!r}"
    if kind == "list_type":
        return format_path(location), f"must be a list, not {value!r}"
    if kind == "string_too_short" and context.get("min_length") == 1:
        return format_path(location), "must not be empty"
    message = error["msg"]
    if kind == "value_error":  # a validator's own ValueError: its message, not pydantic's prefix
        message = str(context.get("error", message.removeprefix("Value error, ")))
    if kind not in _OWN_ERRORS and not isinstance(value, Mapping | list):
        message = f"{message}, not {value!r}"
    return format_path(location), message


def _unknown_key(location: Location) -> str:
    key = location[-1]
    model = _model_at(location[:-1])
    if model is None:
        return f"unknown key {key!r}"
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"expected one of: {', '.join(allowed)}"
    return f"unknown key {key!r} ({hint})"


def _model_at(location: Location) -> type[BaseModel] | None:
    """The document model that validates the object at `location`, for key suggestions."""
    current: Any = PolicyDocument
    for part in location:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
        elif origin is dict:
            current = typing.get_args(current)[1]
        elif origin is list:
            current = typing.get_args(current)[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` → X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
