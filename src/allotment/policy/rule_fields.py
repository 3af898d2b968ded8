"""The fields a rule reads, found in its source, and those no check ever provides.

The `cel` package compiles an expression and lists its top-level names, but does not expose
its syntax tree; so the paths a rule reads (`instance.metadata.user`, `contract['kind']`)
are found by scanning its tokens. String literals and `//` comments are tokens of their
own and never read as paths; names bound by macros (`t` in `tags.exists(t, …)`, `x` in
`cel.bind(x, …)`) are not variables; a method call ends a path (`subject.id.startsWith(…)`
reads `subject.id`); an index by a string literal selects like a dot, by anything else
ends the path (it cannot be known before the check).

    references(source)           → the paths read from a check variable, e.g.
                                   ("instance", "metadata", "user")
    field_errors(source, meters) → one message per path that no check provides
    bound_names(source)          → the names macros bind

`FIELDS` is the shape of each variable as `check/activation.py` builds it, and the table of
docs/policy.md ("Rules and CEL") lists the same fields: a free-form map (contract and
customer attributes, instance metadata, tenant quotas, context) takes any key below it;
`usage` takes the policy's meter names. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Set
from typing import Final

ANY: Final = "any"
"""A free-form map: any key, any depth."""
LEAF: Final = "leaf"
"""A value without fields (a string, a number, a timestamp, a list)."""
METERS: Final = "meters"
"""`usage`: a key per meter of the policy, each a number."""

Shape = str | Mapping[str, "Shape"]

FIELDS: Mapping[str, Shape] = {
    "contract": {
        "id": LEAF,
        "plan": LEAF,
        "kind": LEAF,
        "attributes": ANY,
        "addons": LEAF,
        "starts_at": LEAF,
        "ends_at": LEAF,
        "revision": LEAF,
    },
    "customer": {"key": LEAF, "name": LEAF, "attributes": ANY},
    "subject": {"id": LEAF, "seat": LEAF},
    "instance": {
        "fingerprint": LEAF,
        "kind": LEAF,
        "environment": LEAF,
        "metadata": ANY,
        "lease_expires_at": LEAF,
    },
    "tenant": {"key": LEAF, "quotas": ANY},
    "usage": METERS,
    "seats": {"limit": LEAF, "used": LEAF, "guests": LEAF, "guests_used": LEAF},
    "instances": {"limit": LEAF, "used": LEAF},
    "now": LEAF,
    "context": ANY,
}
"""Each check variable's fields (tests/policy/test_rule_fields.py keeps the names equal to
`rules.RULE_VARIABLES`)."""

# CEL's macros that bind a variable (one, or two for the two-variable comprehensions).
_MACROS = frozenset(
    {
        "all",
        "exists",
        "exists_one",
        "existsOne",
        "map",
        "filter",
        "sortBy",
        "transformList",
        "transformMap",
        "transformMapEntry",
    }
)

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
    | (?P<string>
        (?:[bB]?[rR]|[rR][bB])(?:'''.*?'''|\"\"\".*?\"\"\"|'[^'\n]*'|"[^"\n]*")
      | [bB]?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
               |'(?:\\.|[^\\'\n])*'|"(?:\\.|[^\\"\n])*")
      )
    | (?P<number>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_VALUE_END = frozenset({"name", "string", "number", ")", "]", "}"})


def _tokens(source: str) -> list[tuple[str, str]]:
    """(kind, text): kind is `string`, `number`, `name`, or the punctuation itself."""
    found: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup
        if kind == "space":
            continue
        text = match.group()
        found.append((text, text) if kind == "op" else (str(kind), text))
    return found


def _kind(tokens: list[tuple[str, str]], index: int) -> str:
    return tokens[index][0] if 0 <= index < len(tokens) else ""


def _bound(tokens: list[tuple[str, str]]) -> set[str]:
    bound: set[str] = set()
    for index, (kind, text) in enumerate(tokens):
        if kind != "name" or _kind(tokens, index + 1) != "(":
            continue
        macro = _kind(tokens, index - 1) == "." and text in _MACROS
        bind = (
            text == "bind"
            and _kind(tokens, index - 1) == "."
            and tokens[index - 2] == ("name", "cel")
        )
        if not (macro or bind):
            continue
        at = index + 2
        for _ in range(1 if bind else 2):
            if _kind(tokens, at) == "name" and _kind(tokens, at + 1) == ",":
                bound.add(tokens[at][1])
                at += 2
            else:
                break
    return bound


def bound_names(source: str) -> set[str]:
    """The names the expression's macros bind (`t` in `tags.exists(t, t == 'beta')`)."""
    return _bound(_tokens(source))


def _literal(text: str) -> str | None:
    """A string literal's value when it has no escapes (else None: not worth decoding)."""
    body = text.lstrip("bBrR")
    quote = 3 if body[:3] in ("'''", '"""') else 1
    value = body[quote:-quote]
    return None if "\\" in value else value


def references(source: str) -> Iterator[tuple[str, ...]]:
    """The paths the expression reads from a check variable, in source order."""
    tokens = _tokens(source)
    bound = _bound(tokens)
    for index, (kind, text) in enumerate(tokens):
        if kind != "name" or text not in FIELDS or text in bound:
            continue
        if _kind(tokens, index + 1) == "(":
            continue  # a function of that name, not the variable
        if _kind(tokens, index - 1) == "." and _kind(tokens, index - 2) in _VALUE_END:
            continue  # a field of something else (`x.contract`); `.contract` is the root
        path = [text]
        at = index + 1
        while True:
            step = _kind(tokens, at)
            if step == "." and _kind(tokens, at + 1) == "?":  # `a.?b`, an optional select
                at += 1
            if step == "." and _kind(tokens, at + 1) == "name":
                if _kind(tokens, at + 2) == "(":
                    break  # a method: `.size()`, `.exists(…)`
                path.append(tokens[at + 1][1])
                at += 2
                continue
            if step == "[":
                key_at = at + 2 if _kind(tokens, at + 1) == "?" else at + 1
                if _kind(tokens, key_at) == "string" and _kind(tokens, key_at + 1) == "]":
                    key = _literal(tokens[key_at][1])
                    if key is not None:
                        path.append(key)
                        at = key_at + 2
                        continue
            break
        yield tuple(path)


def _field_error(path: tuple[str, ...], meters: Set[str]) -> str | None:
    shape: Shape = FIELDS[path[0]]
    for depth, part in enumerate(path[1:], start=1):
        if shape == ANY:
            return None
        where = ".".join(path[:depth])
        field = ".".join(path[: depth + 1])
        if shape == METERS:
            if part in meters:
                shape = LEAF
                continue
            known = ", ".join(sorted(meters)) if meters else "none: the policy has no meters"
            return f"'{field}' is never provided: usage has a key per meter of the policy ({known})"
        if isinstance(shape, str):  # LEAF
            return f"'{field}' is never provided: {where} has no fields"
        if part not in shape:
            return f"'{field}' is never provided: {where} has {', '.join(shape)}"
        shape = shape[part]
    return None


def field_errors(source: str, meters: Set[str]) -> list[str]:
    """One message per distinct path of `source` that no check provides; `meters` are the
    policy's meter names (the keys of `usage`)."""
    found: dict[str, None] = {}
    for path in references(source):
        message = _field_error(path, meters)
        if message is not None:
            found[message] = None
    return list(found)
