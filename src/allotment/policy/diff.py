"""The difference between two policy documents, by path, for `GET /v1/policies/{v}/diff`.

Compare canonical forms (`document.canonical_form`) so that key order, YAML against JSON,
`72h` against `3d` and spelled-out defaults are not reported as changes.

    value                        compared
    objects                      key by key, recursively
    lists of objects (rules,     index by index, recursively: `rules[1].when` changed;
    tiers)                       items past the shorter list are added or removed
    lists of scalars (features,  as whole values: `plans.team.features` changed from
    requires)                    one list to the other, since a shifted index would
                                 report every later entry as changed
    anything else                by equality; a change of type is a change
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, TypedDict

from allotment.policy.paths import Location, format_path


class Added(TypedDict):
    path: str
    value: Any


class Removed(TypedDict):
    path: str
    value: Any


class Changed(TypedDict):
    path: str
    old: Any
    new: Any


class PolicyDiff(TypedDict):
    added: list[Added]
    removed: list[Removed]
    changed: list[Changed]


def diff(old: Any, new: Any) -> PolicyDiff:
    """What changed from `old` to `new`, each list ordered by path as walked (sorted keys)."""
    result: PolicyDiff = {"added": [], "removed": [], "changed": []}
    for kind, location, values in _walk(old, new, location=()):
        path = format_path(location)
        if kind == "added":
            result["added"].append({"path": path, "value": values[1]})
        elif kind == "removed":
            result["removed"].append({"path": path, "value": values[0]})
        else:
            result["changed"].append({"path": path, "old": values[0], "new": values[1]})
    return result


def _walk(
    old: Any, new: Any, *, location: Location
) -> Iterator[tuple[str, Location, tuple[Any, Any]]]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            here = (*location, key)
            if key not in new:
                yield "removed", here, (old[key], None)
            elif key not in old:
                yield "added", here, (None, new[key])
            else:
                yield from _walk(old[key], new[key], location=here)
    elif _are_record_lists(old, new):
        for index in range(max(len(old), len(new))):
            here = (*location, index)
            if index >= len(new):
                yield "removed", here, (old[index], None)
            elif index >= len(old):
                yield "added", here, (None, new[index])
            else:
                yield from _walk(old[index], new[index], location=here)
    elif type(old) is not type(new) or old != new:
        # bool is an int to Python; True → 1 is still a change in a document.
        yield "changed", location, (old, new)


def _are_record_lists(old: Any, new: Any) -> bool:
    if not (isinstance(old, list) and isinstance(new, list)):
        return False
    return any(isinstance(item, Mapping) for item in (*old, *new))
