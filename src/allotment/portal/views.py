"""What each portal page shows, gathered through the services the API answers with (the
Checker's entitlements, usage reads, seats, instances, invoice previews), so a page's
numbers are the API's.

    overview(session, checker, customer, now)          contract, days left, the month so far
    entitlement_list(checker, customer, now)            each feature, why, what would unlock it
    feature_graph(checker, customer, now)               the graph, laid out, with upgrade paths
    usage(session, checker, customer, now)              each meter's days this period, its limit
    seats_page(session, checker, viewer, now, cursor=)  held / limit, burst window, holders
    instances_page(session, checker, customer, now)     live leases by kind
    invoice(session, document, now)                     this month's preview (and its CSV)
    release_notes(session, customer)                    the policy changes that touched it
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.billing import service as billing
from allotment.billing.schemas import InvoiceRead
from allotment.check.service import Checker
from allotment.check.snapshot import StoreUnavailable
from allotment.errors import ServiceUnavailable
from allotment.instances import service as instances
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Catalog
from allotment.portal import charts, upgrades, wording
from allotment.releases import service as releases
from allotment.seats import history as seat_history
from allotment.seats import service as seats
from allotment.seats import sessions as seat_sessions
from allotment.usage import reads

# Holders and instances shown per page; further ones are a "next page" link away.
PAGE_SIZE = 100


async def entitlements(
    checker: Checker, customer: str, now: datetime
) -> tuple[dict[str, Any], Catalog | None]:
    """The entitlements document GET /v1/customers/{key}/entitlements answers, and the
    catalog it was decided with."""
    try:
        document, snapshot = await checker.entitlements_of(customer, now)
    except StoreUnavailable as exc:
        raise ServiceUnavailable("The store is unavailable and nothing is cached.") from exc
    return document, snapshot.catalog


def period_of(now: datetime) -> str:
    return now.strftime("%Y-%m")


async def invoice(
    session: AsyncSession, document: dict[str, Any], now: datetime
) -> InvoiceRead | None:
    """This month's invoice preview of the contract in force, as of the last whole hour (or
    now, when nothing was priced as of that hour).

    An hour's use comes from its hourly counter, except in an hour the preview's instant
    cuts: that one is read event by event (docs/billing.md, "Taken at an instant"), which in
    a busy hour is most of a preview's time. On the hour, nothing is cut, and the page is
    exactly what the API answers with that `as_of`."""
    contract = document.get("contract")
    if contract is None:
        return None
    hour = last_hour(now)
    key = (contract["id"], hour)
    cached = _TAKEN.get(key)
    if cached is not None and now < cached[1]:
        return cached[0]
    # Late events: only those for the time the lines price (before the instant), not the use
    # since, which is not late and which the next whole hour takes in: counting it would
    # read every event of the current hour (docs/portal.md#speed).
    found = await billing.preview(
        session,
        contract_id=contract["id"],
        period=period_of(now),
        now=now,
        as_of=hour,
        late_before=True,
    )
    if found.lines or hour == now:
        _remember(key, found, now)
        return found
    if not found.lines and hour < now:
        # Nothing was priced as of the hour: the contract was recorded after it began (a new
        # customer's first hour). Taken now instead, so the page does not say "0.00"; from
        # the next whole hour on, it is taken on the hour again (docs/portal.md#speed). At
        # `now` itself, not the API's default of now to the second: a contract recorded
        # earlier in this same second would fall after that instant and price as nothing.
        found = await billing.preview(
            session,
            contract_id=contract["id"],
            period=period_of(now),
            now=now,
            as_of=now,
            late_before=True,
        )
    return found


# The previews taken on the hour, by (contract, hour), for a minute: a preview as of a past
# instant never changes its lines (revisions, activations and events count only when
# recorded by then: docs/billing.md), so the overview, invoice and CSV pages a customer opens
# one after another price it once. Its late events may grow meanwhile: a minute behind at
# most. Per process; the oldest go first past the bound.
TAKEN_FOR = timedelta(seconds=60)
TAKEN_MAX = 1024
_TAKEN: dict[tuple[str, datetime], tuple[InvoiceRead, datetime]] = {}


def _remember(key: tuple[str, datetime], found: InvoiceRead, now: datetime) -> None:
    for stale in [k for k, (_, until) in _TAKEN.items() if until <= now]:
        del _TAKEN[stale]
    while len(_TAKEN) >= TAKEN_MAX:
        del _TAKEN[next(iter(_TAKEN))]
    _TAKEN[key] = (found, now + TAKEN_FOR)


def last_hour(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0)


def countdown(contract: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """The contract's end (a trial's, or the end of its term: a contract's `ends_at` is an
    end, not a renewal), with the whole days left (to the nearest) and, under two days, the
    hours or minutes left in words ("in 30 hours", "in 40 minutes": docs/portal.md)."""
    if contract is None or contract.get("ends_at") is None:
        return None
    ends_at = datetime.fromisoformat(contract["ends_at"].replace("Z", "+00:00"))
    seconds = (ends_at - now).total_seconds()
    return {
        "what": "Trial ends" if contract["kind"] == "trial" else "Ends",
        "at": ends_at,
        "days_left": wording.days_left(seconds),
        "in_hours": 0 < seconds < wording.IN_DAYS_FROM,
        "left": wording.time_left(seconds),
        "past": seconds <= 0,
    }


async def overview(
    session: AsyncSession, checker: Checker, customer: str, now: datetime
) -> dict[str, Any]:
    document, _ = await entitlements(checker, customer, now)
    contract = document["contract"]
    allowed = sum(1 for f in document["features"] if f["allowed"])
    found = await invoice(session, document, now)
    return {
        "title": "Overview",
        "contract": contract,
        "countdown": countdown(contract, now),
        "invoice": found,
        "invoice_as_of": isoformat(found.as_of) if found is not None else None,
        "features_allowed": allowed,
        "features_total": len(document["features"]),
        "limits": document["limits"],
        "now": now,
    }


async def entitlement_list(checker: Checker, customer: str, now: datetime) -> dict[str, Any]:
    document, catalog = await entitlements(checker, customer, now)
    contract = document["contract"]
    verdicts = {verdict["feature"]: verdict for verdict in document["features"]}
    rows = []
    for verdict in document["features"]:
        found = None
        if catalog is not None and verdict["reason"] in upgrades.CATALOG_REASONS:
            found = upgrades.unlock(catalog, contract, verdict["feature"])
        spec = catalog.features.get(verdict["feature"]) if catalog is not None else None
        limit = document["limits"]["meters"].get(verdict.get("meter") or "")
        rows.append(
            {
                **verdict,
                "why": upgrades.describe(verdict["reason"]),
                "description": spec.description if spec is not None else None,
                "unlock": found,
                "limit": limit,
                "limit_state": upgrades.limit_state(limit),
                "needs": upgrades.requirements(verdict, verdicts),
            }
        )
    return {"title": "Entitlements", "contract": contract, "features": rows}


async def feature_graph(checker: Checker, customer: str, now: datetime) -> dict[str, Any]:
    document, catalog = await entitlements(checker, customer, now)
    if catalog is None:
        return {"title": "Feature graph", "graph": None, "layout": None, "catalog": None}
    found = upgrades.graph(catalog, document)
    return {
        "title": "Feature graph",
        "contract": document["contract"],
        "graph": found,
        "layout": charts.graph_layout(found),
        "catalog": catalog,
    }


def _days(start: datetime, end: datetime) -> list[date]:
    days, day = [], start.date()
    while day < end.date():
        days.append(day)
        day += timedelta(days=1)
    return days


async def usage(
    session: AsyncSession, checker: Checker, customer: str, now: datetime
) -> dict[str, Any]:
    """Each meter of the customer's catalog over the current billing period, by day, read
    as GET /v1/customers/{key}/usage reads it (from the hourly counters), all in one go."""
    document, catalog = await entitlements(checker, customer, now)
    start, end = reads.billing_period(now)
    days = _days(start, end)
    catalog_meters = sorted((catalog.meters if catalog is not None else {}).items())
    found = await reads.usage_of_meters(
        session,
        customer_key=customer,
        meters=[meter for _, meter in catalog_meters],
        start=start,
        end=end,
        granularity="day",
        tenant=None,
        as_of=now,
    )
    meters = []
    for (name, meter), read in zip(catalog_meters, found, strict=True):
        values = {bucket.start.date(): bucket.value for bucket in read.buckets}
        limit = document["limits"]["meters"].get(name)
        cap = Decimal(str(limit["limit"])) if limit is not None else None
        meters.append(
            {
                "name": name,
                "meter": meter,
                "read": read,
                "limit": limit,
                "state": upgrades.limit_state(limit),
                "rows": [(day, values.get(day, Decimal(0))) for day in days if day <= now.date()],
                "chart": charts.usage_chart(
                    days,
                    values,
                    limit=cap,
                    limit_period=limit["period"] if limit else None,
                    today=now.date(),
                ),
            }
        )
    return {"title": "Usage", "start": start, "end": end, "meters": meters}


async def seats_page(
    session: AsyncSession,
    checker: Checker,
    *,
    customer: str,
    customer_id: int,
    now: datetime,
    cursor: str | None,
) -> dict[str, Any]:
    document, _ = await entitlements(checker, customer, now)
    pool = document["limits"]["seats"]
    page = await seats.list_seats(session, customer_key=customer, limit=PAGE_SIZE, cursor=cursor)
    burst = await seat_history.open_burst(session, customer_id=customer_id)
    live = []
    if pool is not None and pool["model"] == "concurrent":  # sessions, not seats, are held
        rows = await seat_sessions.live_sessions(
            session, customer_id=customer_id, now=now, limit=PAGE_SIZE
        )
        live = [seat_sessions.read(row, customer) for row in rows]
    return {
        "title": "Seats",
        "pool": pool,
        "sessions": live,
        "holders": [seats.read(row, customer) for row in page.items],
        "next_cursor": page.next_cursor,
        "burst": burst,
        "burst_extra_left": None
        if burst is None or pool is None
        else max(0, burst.limit + burst.extra - pool["held"]),
    }


async def instances_page(
    session: AsyncSession, checker: Checker, customer: str, now: datetime, cursor: str | None
) -> dict[str, Any]:
    document, _ = await entitlements(checker, customer, now)
    page = await instances.list_instances(
        session, customer_key=customer, limit=PAGE_SIZE, cursor=cursor, now=now
    )
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for row in page.items:
        by_kind[row.kind].append(instances.read(row, customer))
    return {
        "title": "Instances",
        "pool": document["limits"]["instances"],
        "kinds": {
            kind: {"leases": rows, "weight": sum(r.weight for r in rows)}
            for kind, rows in sorted(by_kind.items())
        },
        "next_cursor": page.next_cursor,
    }


async def invoice_page(
    session: AsyncSession, checker: Checker, customer: str, now: datetime
) -> dict[str, Any]:
    document, _ = await entitlements(checker, customer, now)
    found = await invoice(session, document, now)
    return {
        "title": "Invoice",
        "invoice": found,
        "as_of": isoformat(found.as_of) if found is not None else None,
    }


# Release notes: the newest policy moves looked at for the customer's page.
RELEASES_LOOKED_AT = 50


async def release_notes(session: AsyncSession, customer: str) -> dict[str, Any]:
    """The notes of the newest publishes and rollbacks (releases.notes_for) whose impact
    names the customer: what it gained or lost, its limits and its invoice estimate."""
    moves = await releases.changelog(session, limit=RELEASES_LOOKED_AT, cursor=None)
    touched, seen = [], set()
    for move in moves.items:
        if move.version in seen:
            continue
        seen.add(move.version)
        notes = await releases.notes_for(session, move.version)
        impact = notes["impact"]
        mine = next((c for c in impact["customers"] if c["customer"] == customer), None)
        orphaned = [o for o in notes["orphaned"] if o["customer"] == customer]
        if mine is None and not orphaned:
            continue
        touched.append({"notes": notes, "mine": mine, "orphaned": orphaned})
    return {"title": "Release notes", "touched": touched, "looked_at": len(moves.items)}
