"""Release notes in words: a policy diff as sentences and the dry-run's impact regrouped
(their markdown rendering: releases/markdown.py). Pure: no I/O (docs/release-notes.md).

    changes(old, new)   → [{kind, path, text}]   "sso added to team",
                                                 "api_calls limit 100,000 → 50,000 on team"
    impact_of(report)   → the dry-run report regrouped: per feature, per limit, invoices

`changes` words the diff of `policy/diff.py` (the same paths GET …/diff answers): a plan's
feature list by member ("sso added to team"), `extends` as inheritance, limits, seats,
instances and prices by name, add-ons, meters and rules; any other path is worded from the
path itself, so no kind of change is ever left out. A change to a plan also names the plans
that inherit it (`extends`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal, TypedDict

from allotment.policy.diff import diff
from allotment.policy.document import NAMED_SECTIONS

__all__ = ["Change", "changes", "impact_of", "limit_words", "words"]

Kind = Literal["added", "removed", "changed"]
Location = tuple[str | int, ...]


class Change(TypedDict):
    kind: Kind
    path: str
    text: str


# -- values and paths ------------------------------------------------------------------------


def words(value: Any) -> str:
    """A document value as a reader would write it: 100,000; yes; sso, audit_log."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(words(v) for v in value) if value else "none"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {words(v)}" for k, v in value.items()) + "}"
    return str(value)


_TOKEN = re.compile(r'\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]|\.?([^.\[\]]+)')


def _location(path: str) -> Location:
    """`plans.team.limits.api_calls.limit` → ("plans", "team", "limits", "api_calls", "limit")."""
    parts: list[str | int] = []
    for index, quoted, plain in _TOKEN.findall(path):
        if index:
            parts.append(int(index))
        elif quoted:
            parts.append(json.loads(quoted))
        else:
            parts.append(plain)
    return tuple(parts)


# What a path under a plan (or an add-on) is called; "*" matches any one part, and {0}, {1}
# name the parts it matched. Tier numbers are shown from 1.
_THINGS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("limits", "*"), "{0} limit"),
    (("limits", "*", "limit"), "{0} limit"),
    (("limits", "*", "period"), "{0} limit period"),
    (("limits", "*", "enforcement"), "{0} limit enforcement"),
    (("seats",), "seats"),
    (("seats", "limit"), "seat limit"),
    (("seats", "guests"), "guest seats"),
    (("seats", "model"), "seat model"),
    (("seats", "burst"), "seat burst"),
    (("seats", "burst", "extra"), "seat burst extra"),
    (("seats", "burst_extra"), "seat burst extra"),
    (("seats", "burst", "window"), "seat burst window"),
    (("seats", "session_ttl"), "session lease"),
    (("instances",), "instances"),
    (("instances", "limit"), "instance limit"),
    (("instances", "kinds", "*"), "{0} instance weight"),
    (("instances", "lease_ttl"), "instance lease"),
    (("price",), "price"),
    (("price", "base"), "base price"),
    (("price", "seat"), "seat pricing"),
    (("price", "seat", "unit"), "seat price"),
    (("price", "seat", "included"), "seats included"),
    (("price", "seat", "basis"), "seat price basis"),
    (("price", "burst_seat_day"), "burst seat-day price"),
    (("price", "instance_hour"), "instance-hour price"),
    (("price", "minimum"), "minimum charge"),
    (("price", "meters", "*"), "{0} pricing"),
    (("price", "meters", "*", "included"), "{0} units included"),
    (("price", "meters", "*", "tiers"), "{0} tiers"),
    (("price", "meters", "*", "tiers", "#"), "{0} tier {1}"),
    (("price", "meters", "*", "tiers", "#", "unit"), "{0} tier {1} unit price"),
    (("price", "meters", "*", "tiers", "#", "up_to"), "{0} tier {1} upper bound"),
    (("price", "meters", "*", "tiers", "#", "flat"), "{0} tier {1} flat fee"),
    (("attributes", "*"), "attribute {0}"),
    (("price_lists", "*"), "{0} price list"),
    # add-ons
    (("raises", "seats"), "seats it adds"),
    (("raises", "instances"), "instances it adds"),
    (("raises", "limits", "*"), "{0} limit it adds"),
    (("per_seat", "unit"), "per-seat price"),
    (("per_instance", "unit"), "per-instance price"),
    (("per_unit", "unit"), "per-unit price"),
)


def _thing(rest: Location) -> str:
    """The name of the path `rest` under a plan or an add-on, in words."""
    for pattern, template in _THINGS:
        if len(pattern) != len(rest):
            continue
        captured: list[str] = []
        for want, part in zip(pattern, rest, strict=True):
            if want == "#" and isinstance(part, int):
                captured.append(str(part + 1))
            elif want == "*" and isinstance(part, str):
                captured.append(part)
            elif want != part:
                break
        else:
            return template.format(*captured)
    if rest and rest[0] == "price_lists" and len(rest) > 1:
        return f"{rest[1]} {_thing(('price', *rest[2:]))}"
    return " ".join(str(p + 1) if isinstance(p, int) else str(p).replace("_", " ") for p in rest)


def limit_words(path: str, plan: str | None = None) -> str:
    """A limit's path in words, as the dry-run names it (`meters.api_calls.limit`,
    `seats.limit`: impact/service.py) or under a plan (`plans.team.limits.api_calls`):
    "api_calls limit on team". The notes' JSON keeps the path; this is for readers."""
    rest = _location(path)
    if len(rest) >= 2 and rest[0] == "plans":
        plan, rest = str(rest[1]), rest[2:]
    if rest[:1] == ("meters",):
        rest = ("limits", *rest[1:])
    elif rest[:2] == ("limits", "meters"):
        rest = ("limits", *rest[2:])
    thing = _thing(rest)
    return f"{thing} on {plan}" if plan else thing


# -- the diff in words -----------------------------------------------------------------------


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[Change]:
    """Every change from `old` (None: nothing was published before) to `new`, in words,
    ordered by path."""
    # Nothing before: each feature, plan, add-on, meter and rule is added one by one.
    before: Mapping[str, Any] = old or {**{section: {} for section in NAMED_SECTIONS}, "rules": []}
    result = diff(before, new)
    heirs = _heirs(new)
    found: list[Change] = []
    for added in result["added"]:
        found.extend(_worded("added", added["path"], None, added["value"], before, new, heirs))
    for removed in result["removed"]:
        found.extend(
            _worded("removed", removed["path"], removed["value"], None, before, new, heirs)
        )
    for changed in result["changed"]:
        found.extend(
            _worded("changed", changed["path"], changed["old"], changed["new"], before, new, heirs)
        )
    found.sort(key=lambda c: (c["path"], c["text"]))
    return found


def _heirs(document: Mapping[str, Any]) -> dict[str, list[str]]:
    """Plan → every plan that extends it, directly or not (nearest first), by name."""
    parents = {name: spec.get("extends") for name, spec in document.get("plans", {}).items()}
    heirs: dict[str, list[str]] = {}
    for name in sorted(parents):
        seen: set[str] = set()
        parent = parents.get(name)
        while parent is not None and parent not in seen:
            seen.add(parent)
            heirs.setdefault(parent, []).append(name)
            parent = parents.get(parent)
    return heirs


def _inherited_by(
    document: Mapping[str, Any], plan: str, rest: Location, heirs: list[str]
) -> list[str]:
    """The heirs of `plan` that inherit the change at `rest`: those with no plan between
    them and `plan` writing that path itself (policy/inheritance.py: the child's value wins;
    a feature list always merges; `extends` and `description` are not inherited)."""
    if rest[:1] in (("extends",), ("description",)):
        return []
    plans = document.get("plans", {})
    inheriting = []
    for heir in heirs:
        name: str | None = heir
        while name is not None and name != plan:
            if _writes(plans.get(name, {}), rest):
                break
            name = plans.get(name, {}).get("extends")
        else:
            inheriting.append(heir)
    return sorted(inheriting)


def _writes(spec: Mapping[str, Any], rest: Location) -> bool:
    """Whether a plan's own spec writes the value at `rest` (a list replaced as a whole).
    A feature list merges, so a plan writes `("features", name)` when its own list names the
    feature (`name`, `+name` or `-name`): what it inherits for that feature does not matter."""
    if len(rest) == 2 and rest[0] == "features":
        return any(str(entry).lstrip("+-") == rest[1] for entry in spec.get("features") or ())
    value: Any = spec
    for part in rest:
        if isinstance(part, int):
            return True  # the list holding it is the plan's own
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def _worded(
    kind: Kind,
    path: str,
    old: Any,
    new: Any,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    heirs: Mapping[str, list[str]],
) -> Iterator[Change]:
    location = _location(path)
    inheriting: list[str] = []
    if location[:1] == ("plans",) and location[2:] == ("features",):
        # Each feature on its own: a plan that names the feature itself does not inherit it.
        plan = str(location[1])
        for feature, text in _member_changes(plan, old or [], new or []):
            if feature is not None:
                inheriting = _inherited_by(after, plan, ("features", feature), heirs.get(plan, []))
                if inheriting:
                    text += f" (inherited by {', '.join(inheriting)})"
            yield {"kind": kind, "path": path, "text": text}
        return
    if location[:1] == ("plans",) and len(location) > 2:
        plan = str(location[1])
        inheriting = _inherited_by(after, plan, location[2:], heirs.get(plan, []))
    for text in _sentences(kind, location, old, new, before, after):
        if inheriting:
            text += f" (inherited by {', '.join(inheriting)})"
        yield {"kind": kind, "path": path, "text": text}


def _sentences(
    kind: Kind,
    location: Location,
    old: Any,
    new: Any,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
) -> Iterator[str]:
    section, name, rest = (
        location[0] if location else "",
        location[1] if len(location) > 1 else None,
        location[2:],
    )
    if section == "currency" and kind == "changed":
        yield f"currency {words(old)} → {words(new)}"
    elif section in ("features", "meters") and name is not None:
        label = "feature" if section == "features" else "meter"
        if not rest:
            about = _spec(str(section), new) if kind == "added" else ""
            yield f"{label} {name} {kind}" + (f" ({about})" if about else "")
        else:
            yield _sentence(kind, f"{label} {name} {_thing(rest)}", None, old, new)
    elif section == "plans" and name is not None:
        if not rest:
            yield f"plan {name} {kind}"
        elif rest == ("features",):
            yield from _members(str(name), old or [], new or [])
        elif rest == ("extends",):
            yield {
                "added": f"{name} now extends {new}",
                "removed": f"{name} no longer extends {old}",
                "changed": f"{name} now extends {new} (was {old})",
            }[kind]
        else:
            yield _sentence(kind, _thing(rest), str(name), old, new)
    elif section == "addons" and name is not None:
        if not rest:
            yield f"add-on {name} {kind}"
        elif rest == ("features",):
            yield from _members(f"add-on {name}", old or [], new or [])
        else:
            yield _sentence(kind, _thing(rest), f"add-on {name}", old, new)
    elif section == "rules" and isinstance(name, int):
        rule = (after if kind != "removed" else before).get("rules", [])[name]
        label = f"rule {name + 1} ({rule.get('feature')})"
        if not rest:
            yield (
                f"{label} {kind}: allowed only when {rule.get('when')} (else {rule.get('reason')})"
            )
        else:
            yield _sentence(kind, f"{label} {_thing(rest)}", None, old, new)
    else:
        yield _sentence(kind, _thing(location), None, old, new)


def _sentence(kind: Kind, thing: str, scope: str | None, old: Any, new: Any) -> str:
    if kind == "added":
        return f"{thing} {words(new)} added" + (f" to {scope}" if scope else "")
    if kind == "removed":
        return f"{thing} {words(old)} removed" + (f" from {scope}" if scope else "")
    return f"{thing} {words(old)} → {words(new)}" + (f" on {scope}" if scope else "")


def _spec(section: str, value: Any) -> str:
    """What an added feature or meter is, briefly: what differs from the defaults."""
    if not isinstance(value, Mapping):
        return words(value)
    if section == "meters":
        parts = [f"{value.get('aggregation')} of {value.get('event_type')}"]
        if value.get("property"):
            parts[0] = f"{value['aggregation']} of {value['property']} in {value['event_type']}"
    else:
        parts = []
        if value.get("meter"):
            parts.append(f"metered by {value['meter']}")
        if value.get("requires"):
            parts.append(f"requires {words(value['requires'])}")
        for holding in ("seat", "instance"):
            if value.get(holding) == "required":
                parts.append(f"needs {'a seat' if holding == 'seat' else 'an instance'}")
        if value.get("guests"):
            parts.append("guests may use it")
        if value.get("on_outage") == "allow":
            parts.append("allowed during an outage")
    if value.get("description"):
        parts.append(str(value["description"]))
    return "; ".join(parts)


def _members(owner: str, old: Sequence[str], new: Sequence[str]) -> Iterator[str]:
    for _, text in _member_changes(owner, old, new):
        yield text


def _member_changes(
    owner: str, old: Sequence[str], new: Sequence[str]
) -> Iterator[tuple[str | None, str]]:
    """A feature list's change by member, as (feature, sentence); the feature is None when
    the members were only reordered. In a plan that `extends` another, `+f` adds to what it
    inherits and `-f` takes away."""

    def signs(entries: Sequence[str]) -> dict[str, str]:
        return {e.lstrip("+-"): ("-" if e.startswith("-") else "+") for e in entries}

    was, now = signs(old), signs(new)
    if was == now:  # the same members in another order: no change to what is granted
        yield None, f"features of {owner} reordered: {words(list(new))}"
        return
    for feature in sorted(was.keys() | now.keys()):
        if was.get(feature) == now.get(feature):
            continue
        # Present with "+" means granted; with "-" or absent means not granted by this list.
        granted = now.get(feature) == "+"
        if feature in now and feature not in was and not granted:
            yield feature, f"{feature} removed from {owner}"
        elif feature in was and feature not in now and was[feature] == "-":
            yield feature, f"{feature} no longer removed from {owner}"
        else:
            yield feature, f"{feature} {'added to' if granted else 'removed from'} {owner}"


# -- the impact, regrouped -------------------------------------------------------------------


def impact_of(report: Mapping[str, Any] | None) -> dict[str, Any]:
    """The dry-run report (impact/service.dry_run) regrouped for readers: who gains or loses
    each feature, each limit change, each non-zero invoice change (in the contract's own
    currency, so they are not summed). None (nothing was
    active before) is an impact on no one."""
    if report is None:
        return {
            "summary": {
                "customers_evaluated": 0,
                "customers_affected": 0,
                "customers_pinned": 0,
                "contracts_orphaned": 0,
            },
            "complete": True,
            "features": [],
            "limits": [],
            "invoices": [],
            "pinned": [],
            "customers": [],
        }
    gained: dict[str, list[str]] = {}
    lost: dict[str, list[str]] = {}
    limits: list[dict[str, Any]] = []
    invoices: list[dict[str, Any]] = []
    for entry in report["customers"]:
        for feature in entry["features_gained"]:
            gained.setdefault(feature, []).append(entry["customer"])
        for feature in entry["features_lost"]:
            lost.setdefault(feature, []).append(entry["customer"])
        for change in entry["limits_changed"]:
            limits.append({"customer": entry["customer"], "contract": entry["contract"], **change})
        change = entry["estimated_invoice_change"]
        # A contract left on a plan the version drops is always listed: its plan is not
        # priced after the move, which a reader must not take for "no invoice impact".
        missing = bool(entry.get("plan_missing"))
        if change is not None and (Decimal(change) != 0 or missing):
            invoices.append(
                {
                    "customer": entry["customer"],
                    "contract": entry["contract"],
                    "estimated_invoice_change": change,
                    **({"not_priced_after_the_move": True} if missing else {}),
                }
            )
    return {
        "summary": dict(report["summary"]),
        # False when more customers were affected than the notes list (the summary counts all).
        "complete": report["next_cursor"] is None,
        "features": [
            {"feature": f, "gained_by": gained.get(f, []), "lost_by": lost.get(f, [])}
            for f in sorted(gained.keys() | lost.keys())
        ],
        "limits": limits,
        "invoices": invoices,
        "pinned": list(report["pinned"]),
        "customers": list(report["customers"]),
    }
