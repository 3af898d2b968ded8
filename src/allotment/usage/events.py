"""CloudEvents 1.0 (structured JSON) validation, pure: a raw event in, an Event or its errors out.

Hand-written rather than a pydantic model per event: a batch of 1,000 events is validated in
well under a millisecond per hundred, and every problem names its path the way the API's
problem documents do (`time`, `data.count`, …).

    attribute     rule
    specversion   "1.0"
    id, source    non-empty strings (≤ 256 / 1,024); (source, id) identifies the event
    type          non-empty string (≤ 256); meters select events by it
    subject       the customer's key
    time          RFC 3339 with an offset; default: when received. Not later than
                  `future_s` ahead of now, not older than the late-arrival window
    data          any JSON (a meter reading a property needs an object)
    tenant        extension attribute (optional): one of the customer's tenants
    others        extension attributes: lowercase letters and digits, ≤ 20 characters
                  (CloudEvents' naming rule), kept as they came

`digest(event)` is what the event says, as 32 bytes: SHA-256 of the canonical JSON (sorted
keys) of its type, subject, time (UTC; none when it was not sent), tenant and data. Two
copies of a (source, id) with the same digest are one event sent twice (a duplicate); with
different digests, a conflict (docs/usage.md). Extension attributes are not part of it: they
describe the delivery.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from allotment.auth.principal import CUSTOMER_KEY_PATTERN
from allotment.kit.clock import isoformat

Problem = dict[str, str]

_EXTENSION = re.compile(r"^[a-z0-9]{1,20}$")
_CUSTOMER_KEY = re.compile(CUSTOMER_KEY_PATTERN)
_KNOWN = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "data",
        "datacontenttype",
        "dataschema",
        "tenant",
    }
)
_LIMITS = {"id": 256, "source": 1024, "type": 256, "subject": 64}
_DIGEST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


@dataclass(frozen=True, slots=True)
class Event:
    source: str
    id: str
    type: str
    subject: str
    time: datetime
    data: Any
    tenant: str | None
    extensions: Mapping[str, Any]
    timed: bool = True  # False: the event carried no `time`, `time` is when it was received


@dataclass(frozen=True, slots=True)
class Window:
    """The times an event may carry, relative to when it is received."""

    now: datetime
    late: timedelta  # the late-arrival window
    future: timedelta  # clock skew tolerated ahead of now

    def problem(self, moment: datetime) -> str | None:
        if moment > self.now + self.future:
            return (
                f"{isoformat(moment)} is more than {int(self.future.total_seconds())} s in the "
                "future"
            )
        if moment < self.now - self.late:
            return (
                f"{isoformat(moment)} is older than the late-arrival window of "
                f"{int(self.late.total_seconds())} s"
            )
        return None


def parse(raw: Any, window: Window) -> Event | list[Problem]:
    """The event, or every problem with it (never both)."""
    if not isinstance(raw, dict):
        return [{"path": "", "message": "an event is a JSON object"}]
    problems: list[Problem] = []

    def text(name: str) -> str:
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            problems.append({"path": name, "message": "required: a non-empty string"})
            return ""
        if len(value) > _LIMITS[name]:
            problems.append({"path": name, "message": f"at most {_LIMITS[name]} characters"})
        return value

    if raw.get("specversion") != "1.0":
        problems.append({"path": "specversion", "message": 'must be "1.0" (CloudEvents 1.0)'})
    event_id, source, kind, subject = text("id"), text("source"), text("type"), text("subject")
    if subject and not _CUSTOMER_KEY.match(subject):
        # Not a key any customer can have (nor one PostgreSQL could be asked about: NUL).
        problems.append({"path": "subject", "message": "a customer key: a-z, 0-9, -_. (≤ 64)"})
    moment = window.now
    timed = "time" in raw and raw["time"] is not None
    if timed:
        moment_or_problem = _time(raw["time"])
        if isinstance(moment_or_problem, str):
            problems.append({"path": "time", "message": moment_or_problem})
        else:
            moment = moment_or_problem
            late = window.problem(moment)
            if late is not None:
                problems.append({"path": "time", "message": late})
    tenant = raw.get("tenant")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        problems.append({"path": "tenant", "message": "a tenant key (a non-empty string)"})
    extensions: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _KNOWN:
            continue
        if not _EXTENSION.match(name):
            problems.append(
                {
                    "path": name,
                    "message": "not a CloudEvents attribute; extension names are "
                    "1-20 lowercase letters or digits",
                }
            )
        else:
            extensions[name] = value
    if problems:
        return problems
    return Event(
        source, event_id, kind, subject, moment, raw.get("data"), tenant, extensions, timed
    )


def digest(event: Event) -> bytes:
    """SHA-256 of the event's canonical (type, subject, time in UTC, tenant, data). The time
    as sent: an event sent without one has none here, so its retry (received later) is
    still the same event."""
    content = {
        "data": event.data,
        "subject": event.subject,
        "tenant": event.tenant,
        # orjson writes an aware datetime as RFC 3339 itself, several times faster than
        # strftime; in UTC (`Z`), the same instant written with any offset is the same text.
        "time": event.time.astimezone(UTC) if event.timed else None,
        "type": event.type,
    }
    return hashlib.sha256(orjson.dumps(content, option=_DIGEST_OPTIONS)).digest()


def _time(value: Any) -> datetime | str:
    if not isinstance(value, str):
        return "an RFC 3339 timestamp string"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not an RFC 3339 timestamp"
    if moment.tzinfo is None:
        return "needs a UTC offset (e.g. Z)"
    try:
        # In UTC from here on: hours, days and months are UTC's (a +05:30 offset would
        # otherwise cut hours at :30), and an instant past year 1 or 9999 in UTC is refused
        # here rather than failing later.
        return moment.astimezone(UTC)
    except OverflowError:
        return f"{value!r} is out of range once in UTC"
