"""The portal's values in words: pure functions, no I/O (docs/portal.md).

    moment(at)                 "3 December 2026 at 14:05 UTC"
    time_left(seconds)         "3 days", "3 hours", "1 hour 20 minutes", "40 minutes"
    source(code, source)       an invoice line's `source` for a reader: "meter api_calls,
                               1,234 events, 2026-12-01 → 2026-12-03; plan team, …"

The API and the CSV keep the machine forms; these are only what a page shows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _parsed(at: datetime | str) -> datetime:
    if isinstance(at, str):
        return datetime.fromisoformat(at.replace("Z", "+00:00"))
    return at


def day(at: datetime | str) -> str:
    """ "3 December 2026" (UTC)."""
    at = _parsed(at)
    return f"{at.day} {_MONTHS[at.month - 1]} {at.year}"


def moment(at: datetime | str) -> str:
    """An instant as a reader says it, to the minute, in UTC: "3 December 2026 at 14:05 UTC"."""
    at = _parsed(at)
    return f"{day(at)} at {at:%H:%M} UTC"


def _plural(n: int | Decimal | str, noun: str) -> str:
    return f"{number(n)} {noun}{'' if Decimal(str(n)) == 1 else 's'}"


# From two days on, what is left is said in days; below, in hours (and minutes).
IN_DAYS_FROM = 2 * 86400


def days_left(seconds: float) -> int:
    """Whole days left, to the nearest (a 10-day trial made a second ago has 10 days left;
    2 days and 1 hour, 2 days; 2½ days, 3)."""
    return max(0, math.floor(seconds / 86400 + 0.5))


def time_left(seconds: float) -> str:
    """What is left before an end, in the unit a reader wants: whole days to the nearest from
    two days on (`days_left`); below, whole hours (rounded down, with the minutes while under
    two hours); under an hour, minutes (rounded up, at least 1; 60 is "1 hour")."""
    if seconds >= IN_DAYS_FROM:
        return _plural(days_left(seconds), "day")
    if seconds >= 3600:
        hours = int(seconds // 3600)
        minutes = int(seconds % 3600 // 60)
        if hours == 1 and minutes:
            return f"1 hour {_plural(minutes, 'minute')}"
        return _plural(hours, "hour")
    minutes = max(1, math.ceil(seconds / 60))
    return "1 hour" if minutes >= 60 else _plural(minutes, "minute")


# -- an invoice line's source ----------------------------------------------------------------


def number(value: Any) -> str:
    """1234 → "1,234", "15.5" → "15.5", "4.00" → "4.00" (its places kept: a price); anything
    else as it is."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        found = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    if not found.is_finite():
        return str(value)
    return f"{found:,f}"


_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        joiner = "; " if any(isinstance(v, Mapping) for v in value) else ", "
        return joiner.join(_value(v) for v in value) if value else "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{_key(k)} {_value(v)}" for k, v in value.items())
    if isinstance(value, bool | int | float | Decimal):
        return number(value)
    if isinstance(value, str) and _looks_numeric(value):
        return number(value)
    if isinstance(value, str) and _INSTANT.match(value):
        return f"{_parsed(value):%Y-%m-%d}"
    return str(value)


def _looks_numeric(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except (InvalidOperation, ValueError):
        return False


_LABELS = {"fraction": "fee fraction", "model": "seat model"}


def _key(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " "))


def _span(start: str | None, end: str | None) -> str | None:
    """ "2026-12-01 → 2026-12-03": the days an interval covers (its end is exclusive, so an
    end at midnight names the day before)."""
    if start is None:
        return None
    first = _parsed(start)
    if end is None:
        return f"from {first:%Y-%m-%d}"
    last = _parsed(end)
    shown = last
    if (last.hour, last.minute, last.second, last.microsecond) == (0, 0, 0, 0) and last > first:
        shown = datetime.fromordinal(last.toordinal() - 1)
    if shown.date() == first.date():
        return f"{first:%Y-%m-%d}"
    return f"{first:%Y-%m-%d} → {shown:%Y-%m-%d}"


def _what(code: str, source: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """The phrases that say what the line counted, each with the keys it used up."""
    meter = source.get("meter")
    if meter is not None:
        yield ("meter",), f"meter {meter}"
        if "events" in source:
            yield ("events",), _plural(int(source["events"]), "event")
        if "total" in source:
            yield ("total",), f"total {number(source['total'])}"
    addon = source.get("addon")
    if addon is not None:
        quantity = source.get("quantity")
        bought = f", {number(quantity)} bought" if quantity not in (None, 1) else ""
        yield ("addon", "quantity"), f"add-on {addon}{bought}"
    basis, held = source.get("basis"), source.get("held")
    thing = "instance" if code.startswith("instance") else "seat"
    if basis == "contracted":
        contracted = source.get("contracted")
        yield (
            ("basis", "contracted"),
            f"{number(contracted)} {thing}s bought"
            if contracted is not None
            else f"no {thing}s bought",
        )
    if held is not None:
        how = f" ({basis})" if basis not in (None, "contracted") else ""
        yield ("held", "basis"), f"{number(held)} {thing}s held{how}"
    if "seat_limit" in source:
        yield ("seat_limit",), f"over the seat limit of {number(source['seat_limit'])}"
    kinds = source.get("kinds")
    if isinstance(kinds, list):
        for entry in kinds:
            if isinstance(entry, Mapping):
                name = entry.get("kind") or "no kind"
                yield (
                    ("kinds",),
                    f"{name} (weight {number(entry.get('weight'))}): "
                    f"{_plural(int(entry.get('intervals') or 0), 'lease')}, "
                    f"{_plural(entry.get('hours') or 0, 'hour')}",
                )
    if "kind" in source and "hours" in source:
        yield ("kind", "hours"), f"{source['kind']}: {_plural(source['hours'], 'hour')}"
    if "included" in source:  # nothing included goes without saying
        included = source["included"]
        yield ("included",), "" if included in (None, 0, "0") else f"{_value(included)} included"
    tiers = source.get("tiers")
    if isinstance(tiers, list) and tiers:
        shown = []
        for n, row in enumerate(tiers, start=1):
            if isinstance(row, Mapping):
                bound = "" if row.get("up_to") is None else f" (to {number(row['up_to'])})"
                shown.append(f"tier {n}{bound} {number(row.get('quantity'))} at {row.get('unit')}")
        yield ("tiers", "mode"), f"{source.get('mode', '')}: {'; '.join(shown)}".strip(": ")
    package = source.get("package")
    if isinstance(package, Mapping):
        yield (
            ("package", "mode"),
            f"{_plural(int(package.get('packages') or 0), 'package')} of "
            f"{number(package.get('size'))} for {number(package.get('units'))} units",
        )
    if "intervals" in source:
        yield ("intervals",), _plural(int(source["intervals"]), "interval")
    if "active_days" in source:
        yield ("active_days",), f"{number(source['active_days'])} active days"
    if "fee" in source:
        due = source.get("due")
        yield ("fee", "due"), f"fee {source['fee']}" + (f", due {day(due)}" if due else "")
    if "discount_percent" in source and source["discount_percent"] is not None:
        yield ("discount_percent",), f"{number(source['discount_percent'])} % off"
    lines = source.get("lines")
    if isinstance(lines, list) and lines:
        yield ("lines",), "on " + ", ".join(str(line) for line in lines)


# Shown last, as where the line comes from; never repeated among the other keys.
_PROVENANCE = ("start", "end", "plan", "policy_versions", "revisions")


def source(code: str, found: Mapping[str, Any]) -> str:
    """An invoice line's `source` as a sentence: what was counted, the days it covers, the
    plan, policy versions and contract revisions; any other key as "key value" (a new kind
    of line still says everything it holds). The CSV keeps the JSON (billing/service.py)."""
    used: set[str] = set()
    parts: list[str] = []
    for keys, phrase in _what(code, found):
        used.update(keys)
        if phrase:
            parts.append(phrase)
    for key, value in found.items():
        if key in used or key in _PROVENANCE:
            continue
        if key == "kind" and (code.startswith("discount") or code.startswith("credit")):
            continue  # the line's description names the contract's kind
        parts.append(f"{_key(key)} {_value(value)}")
    span = _span(found.get("start"), found.get("end"))
    origin = []
    if found.get("plan") is not None:
        origin.append(f"plan {found['plan']}")
    versions = found.get("policy_versions") or []
    if versions:
        label = "policy version" if len(versions) == 1 else "policy versions"
        origin.append(f"{label} {_value(versions)}")
    revisions = found.get("revisions") or []
    if revisions:
        label = "contract revision" if len(revisions) == 1 else "contract revisions"
        origin.append(f"{label} {_value(revisions)}")
    text = ", ".join(parts)
    if span is not None:
        text = f"{text}, {span}" if text else span
    if origin:
        text = f"{text}; {', '.join(origin)}" if text else ", ".join(origin)
    return text or "—"
