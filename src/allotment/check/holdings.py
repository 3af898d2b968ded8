"""A customer's holdings for its snapshot: read in the snapshot's load, cached with it.

LOAD                       the second select of `SnapshotCache._load` (after the contract
                           rows): live seats, live sessions, each fingerprint's latest
                           registration, and the tenants' quotas
payload(rows, now)         → the `holdings` part of a snapshot payload (as L2 stores it),
                             and the earliest live lease expiry (the snapshot's end)
from_payload(payload)      → check/values.Holdings
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import text

from allotment.check.values import NO_HOLDINGS, Holdings, InstanceHold, SessionHold
from allotment.instances import history as instances_history
from allotment.kit.clock import isoformat
from allotment.seats import history as seats_history
from allotment.tenants import reads as tenant_reads
from allotment.tenants.quotas import Quotas

# What the customer holds (check/values.Holdings), in a second round trip of the same load:
# one select uniting each domain's read of what is held now, in one row shape
# (k, name, detail, tenant, until, weight, extra); each domain owns its part.
LOAD = text(
    " UNION ALL ".join(
        (
            seats_history.HELD_NOW,
            seats_history.SESSIONS_NOW,
            f"({instances_history.HELD_NOW})",
            tenant_reads.QUOTAS_NOW,
        )
    )
)
RECENT_INSTANCES = timedelta(days=1)


def payload(rows: Sequence[Any], now: datetime) -> tuple[dict[str, Any], datetime | None]:
    """The `holdings` part of a snapshot payload from the rows of `LOAD`, and the
    earliest live lease expiry after `now` (when the snapshot must be reloaded)."""
    seats: list[list[Any]] = []
    sessions: list[list[Any]] = []
    instances: list[list[Any]] = []
    tenants: dict[str, Any] = {}
    earliest: datetime | None = None
    for row in rows:
        if row.k == "s":
            seats.append([row.name, row.detail, row.tenant])
        elif row.k == "x":
            sessions.append([row.name, row.tenant, isoformat(row.until)])
        elif row.k == "i":
            if row.detail not in ("live", "expired"):
                # Deregistered, or ended with its holder's seat (a release or an erasure):
                # no longer held, and a check on it reads as unknown (docs/seats.md).
                continue
            ended = row.detail == "expired"
            # [fingerprint, weight, tenant, lease_expires_at, ended, kind, environment,
            # metadata]; a payload cached before the last three has five (`from_payload`).
            instances.append(
                [row.name, row.weight, row.tenant, isoformat(row.until), ended]
                + orjson.loads(row.extra)
            )
        else:
            tenants[row.name] = orjson.loads(row.detail)
            continue
        if row.until is not None and row.until > now and row.detail != "expired":
            earliest = row.until if earliest is None else min(earliest, row.until)
    found = {
        "seats": seats,
        "sessions": sessions,
        "instances": instances,
        "tenants": tenants,
        "as_of": isoformat(now),
    }
    return found, earliest


def from_payload(payload: Mapping[str, Any] | None) -> Holdings:
    if payload and "as_of" in payload:
        as_of: datetime | None = datetime.fromisoformat(payload["as_of"])
    else:
        as_of = None
    if not payload:
        return NO_HOLDINGS
    members: dict[str, str | None] = {}
    guests: dict[str, str | None] = {}
    for subject, kind, tenant in payload["seats"]:
        (members if kind == "member" else guests)[subject] = tenant
    sessions = tuple(
        SessionHold(subject, tenant, datetime.fromisoformat(until))
        for subject, tenant, until in payload["sessions"]
    )
    expiry: dict[str, datetime] = {}
    for hold in sessions:
        if hold.subject not in expiry or expiry[hold.subject] < hold.expires_at:
            expiry[hold.subject] = hold.expires_at
    return Holdings(
        members=members,
        guests=guests,
        sessions=sessions,
        session_expiry=expiry,
        instances={row[0]: _instance(row) for row in payload["instances"]},
        tenants={key: Quotas.from_json(q) for key, q in payload["tenants"].items()},
        as_of=as_of,
    )


def _instance(row: Sequence[Any]) -> InstanceHold:
    _, weight, tenant, until, ended, *extra = row
    kind, environment, metadata = (*extra, None, None, None)[:3]
    return InstanceHold(
        weight,
        tenant,
        datetime.fromisoformat(until),
        ended,
        kind=kind,
        environment=environment,
        metadata=metadata,
    )
