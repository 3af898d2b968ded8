"""The evaluator's gates (step 8): seats, instances, tenants and meters.

Seats, instances and tenants are read from the snapshot's holdings; meter use from
`request.usage`, which the checker fills for metered features (check/meter_use.py).

    gate       runs when                           denies with
    seat       the feature has `seat: required`    seat_required (no subject, or the subject
                                                   holds no seat / live session),
                                                   guest_not_allowed (a guest seat, and the
                                                   feature is not `guests: true`)
    instance   the feature has `instance: required` instance_required (no instance named),
                                                   instance_unknown (never registered, or
                                                   deregistered), lease_expired (lapsed)
    tenant     the request names a tenant          tenant_unknown (not a tenant of the
                                                   customer), tenant_quota_reached (the
                                                   tenant holds more of the pool the feature
                                                   needs than its quota: after a quota was
                                                   lowered; at the quota is fine)
    meter      the feature has a `meter` with a    usage_limit_reached (hard: used up, or
               limit, or the request's tenant      `consume` would pass it); allowed with
               has a quota on it                   soft_limit_exceeded (soft, passed) and
                                                   approaching_limit (at `warn_at` of a limit);
                                                   tenant_quota_reached (the tenant's quota).
                                                   An allowed `consume` shows the use after
                                                   it in `limit.used` (docs/usage.md#consume)

The evaluator asks `instance_held` and `tenant_unknown` before the rules too, when a rule
reads `instance` or `tenant` (evaluator.py, step 7): a stranger instance or tenant is
reported as such, not as a rule that failed on it.

Pure like the evaluator: `now` is the caller's. A feature that needs neither a seat nor an
instance nor a meter, checked without a tenant, costs four attribute reads here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from allotment.check.values import CheckRequest, Snapshot, Usage, Verdict
from allotment.contracts.years import contract_year
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Feature, UsageLimit

_NO_SUBJECT = "needs a subject holding a seat: pass `subject`"
_NO_INSTANCE = "needs a registered instance: pass `instance` (its fingerprint)"


def seat(
    snapshot: Snapshot, request: CheckRequest, feature: Feature, now: datetime
) -> Verdict | None:
    if not feature.seat_required:
        return None
    subject = request.subject
    if subject is None:
        return Verdict(False, "seat_required", detail=f"'{feature.name}' {_NO_SUBJECT}")
    holdings = snapshot.holdings
    if subject in holdings.members:
        return None
    if subject in holdings.guests:
        if feature.guests:
            return None
        return Verdict(
            False,
            "guest_not_allowed",
            detail=f"'{subject}' holds a guest seat; '{feature.name}' is not open to guests",
        )
    expiry = holdings.session_expiry.get(subject)
    if expiry is not None and now < expiry:
        return None
    concurrent = snapshot.contract is not None and (
        snapshot.contract.seats is not None and snapshot.contract.seats.model == "concurrent"
    )
    held = "no live session" if concurrent else "no seat"
    return Verdict(
        False, "seat_required", detail=f"'{subject}' holds {held}; '{feature.name}' needs one"
    )


def instance(
    snapshot: Snapshot, request: CheckRequest, feature: Feature, now: datetime
) -> Verdict | None:
    if not feature.instance_required:
        return None
    fingerprint = request.instance
    if fingerprint is None:
        return Verdict(False, "instance_required", detail=f"'{feature.name}' {_NO_INSTANCE}")
    return instance_held(snapshot, fingerprint, now)


def instance_held(snapshot: Snapshot, fingerprint: str, now: datetime) -> Verdict | None:
    """None when the customer holds a live instance `fingerprint` at `now`; else
    instance_unknown or lease_expired. Also asked before a rule reads `instance`."""
    hold = snapshot.holdings.instances.get(fingerprint)
    if hold is None:
        return Verdict(
            False, "instance_unknown", detail=f"no live instance with fingerprint '{fingerprint}'"
        )
    if hold.ended or now >= hold.lease_expires_at:
        return Verdict(
            False,
            "lease_expired",
            detail=f"the lease of instance '{fingerprint}' lapsed; register it again",
        )
    return None


def tenant(
    snapshot: Snapshot, request: CheckRequest, feature: Feature, now: datetime
) -> Verdict | None:
    key = request.tenant
    if key is None:
        return None
    quotas = snapshot.holdings.tenants.get(key)
    if quotas is None:
        return tenant_unknown(key)
    holdings = snapshot.holdings
    if feature.seat_required and quotas.seats is not None:
        seats = snapshot.contract.seats if snapshot.contract is not None else None
        if seats is not None and seats.model == "concurrent":
            held = holdings.live_sessions(now, key)
        else:
            held = sum(1 for t in holdings.members.values() if t == key)
        if held > quotas.seats:
            return _over(key, "seats", held, quotas.seats)
    if feature.instance_required and quotas.instances is not None:
        _, weight = holdings.instance_weight(now, key)
        if weight > quotas.instances:
            return _over(key, "instances", weight, quotas.instances)
    return None


def tenant_unknown(key: str) -> Verdict:
    """A tenant the customer does not have. Also answered before a rule reads `tenant`."""
    return Verdict(False, "tenant_unknown", detail=f"no tenant '{key}' for this customer")


def _over(tenant: str, pool: str, held: int, quota: int) -> Verdict:
    return Verdict(
        False,
        "tenant_quota_reached",
        detail=f"tenant '{tenant}' holds {held} {pool}, over its quota of {quota}",
        limit={"pool": pool, "tenant": tenant, "limit": quota, "held": held},
    )


# -- meters ----------------------------------------------------------------------------------

WARN_AT: tuple[Decimal, ...] = (Decimal("0.8"), Decimal("1"))
"""The default fractions of a limit at which a decision carries `approaching_limit`; the
checker passes its own (ALLOTMENT_USAGE_WARNING_THRESHOLDS) as `warn_at`."""


def meter_limit(snapshot: Snapshot, meter: str, now: datetime) -> UsageLimit | None:
    """The limit on `meter` in force at `now`: the latest unexpired override, else the plan's,
    plus what the contract's add-ons raise it by (docs/contracts.md, "Effective limits")."""
    contract = snapshot.contract
    base = snapshot.plan.limits.get(meter) if snapshot.plan is not None else None
    if contract is None:
        return base
    raised = contract.limit_raises.get(meter, 0)
    for override in reversed(contract.limit_overrides):
        if override.meter == meter and (override.expires_at is None or now < override.expires_at):
            return UsageLimit(
                meter=meter,
                limit=override.limit + raised,
                period=base.period if base else "month",
                enforcement=base.enforcement if base else "hard",
            )
    if base is not None and raised:
        return UsageLimit(meter, base.limit + raised, base.period, base.enforcement)
    return base


def period_end(period: str, now: datetime) -> datetime:
    hour = now.replace(minute=0, second=0, microsecond=0)
    if period == "hour":
        return hour + timedelta(hours=1)
    day = hour.replace(hour=0)
    if period == "day":
        return day + timedelta(days=1)
    first = day.replace(day=1)
    return (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )


def period_end_text(period: str, now: datetime) -> str:
    """`period_end` as decisions write it. A batch's metered features share one `now` (in
    UTC), so the formatting (strftime, a few µs) is done once per batch and period; equal
    instants in other zones may end their periods elsewhere, so those are not cached."""
    if now.tzinfo is UTC:  # keyed by the hour, which is all a period's end depends on
        return _period_end_utc(period, now.replace(minute=0, second=0, microsecond=0))
    return isoformat(period_end(period, now))


@lru_cache(maxsize=64)
def _period_end_utc(period: str, now: datetime) -> str:
    return isoformat(period_end(period, now))


def year_end_text(snapshot: Snapshot, now: datetime) -> str:
    """The end of the contract year holding `now` (docs/contracts.md, "Contract years")."""
    contract = snapshot.contract
    if contract is None:  # no contract: nothing is limited per year; the calendar year
        return isoformat(datetime(now.year + 1, 1, 1, tzinfo=UTC))
    return isoformat(contract_year(contract.starts_at, now).end)


def _ends(period: str, now: datetime, snapshot: Snapshot | None) -> str:
    if period == "year" and snapshot is not None:
        return year_end_text(snapshot, now)
    return period_end_text(period, now)


def number(value: Decimal) -> int | float:
    # An integer past 64 bits goes out as a float: the response encoder (orjson) writes no
    # larger integer, and events may report any reading, so sums can get there.
    if value == value.to_integral_value() and -(2**63) <= value <= 2**64 - 1:
        return int(value)
    return float(value)


def limit_document(
    limit: UsageLimit, used: Decimal, now: datetime, snapshot: Snapshot | None = None
) -> dict[str, Any]:
    """A decision's `limit`: the meter's limit in force and `used` of it this period (a
    yearly limit's period ends with the snapshot's contract year)."""
    return {
        "meter": limit.meter,
        "limit": limit.limit,
        "used": number(used),
        "remaining": number(max(Decimal(0), Decimal(limit.limit) - used)),
        "period_end": _ends(limit.period, now, snapshot),
        "enforcement": limit.enforcement,
    }


def meter(
    snapshot: Snapshot,
    request: CheckRequest,
    feature: Feature,
    now: datetime,
    *,
    warn_at: tuple[Decimal, ...] = WARN_AT,
) -> Verdict | None:
    if feature.meter is None:
        return None
    if request.usage_unavailable and request.usage is None and feature.on_outage != "allow":
        limit = meter_limit(snapshot, feature.meter, now)
        if limit is not None and limit.enforcement == "hard":
            return Verdict(
                False,
                "outage_default",
                detail=f"the use of '{feature.meter}' cannot be read (PostgreSQL is unavailable)",
            )
    return meter_state(
        snapshot,
        feature.meter,
        now,
        tenant=request.tenant,
        usage=request.usage,
        consume=request.consume,
        warn_at=warn_at,
    )


def meter_state(
    snapshot: Snapshot,
    name: str,
    now: datetime,
    *,
    tenant: str | None = None,
    usage: Usage | None = None,
    consume: int | None = None,
    warn_at: tuple[Decimal, ...] = WARN_AT,
) -> Verdict | None:
    """Where meter `name` stands for the snapshot's customer (and `tenant`) at `now`, with
    `consume` more: None when nothing limits it. An allowed verdict's `limit` counts the
    `consume` in `used` (the use once it is recorded); a refused one shows the use as it is."""
    catalog = snapshot.catalog
    found = catalog.meters.get(name) if catalog is not None else None
    if found is not None and found.is_level():
        return None  # a level takes no limit nor quota, whatever was stored (docs/usage.md)
    limit = meter_limit(snapshot, name, now)
    quota = None
    if tenant is not None:
        quotas = snapshot.holdings.tenants.get(tenant)
        quota = quotas.meters.get(name) if quotas is not None else None
    if limit is None and quota is None:
        return None
    wanted = Decimal(consume or 0)
    period = limit.period if limit is not None else "month"
    if quota is not None and usage is not None and tenant is not None:
        used_by_tenant = usage.of(name, tenant).in_period(period)
        if used_by_tenant + wanted > quota or (not wanted and used_by_tenant >= quota):
            return Verdict(
                False,
                "tenant_quota_reached",
                detail=f"tenant '{tenant}' used {number(used_by_tenant)} of its '{name}' quota "
                f"of {quota} this {period}",
                limit={
                    "meter": name,
                    "tenant": tenant,
                    "limit": quota,
                    "used": number(used_by_tenant),
                    "remaining": number(max(Decimal(0), quota - used_by_tenant)),
                    "period_end": _ends(period, now, snapshot),
                    "enforcement": "hard",
                },
            )
    if limit is None:
        return None
    used = usage.of(name).in_period(period) if usage is not None else Decimal(0)
    cap = Decimal(limit.limit)
    after = used + wanted
    if limit.enforcement == "hard" and (after > cap or (not wanted and used >= cap)):
        return Verdict(
            False,
            "usage_limit_reached",
            detail=f"'{name}' used {number(used)} of {limit.limit} this {period}"
            + (f"; {number(wanted)} more does not fit" if wanted else ""),
            limit=limit_document(limit, used, now, snapshot),  # refused: nothing was consumed
        )
    # Allowed: a consume's answer shows the use with its `consume` counted (docs/usage.md).
    document = limit_document(limit, after, now, snapshot)
    warnings: tuple[str, ...] = ()
    reached = [t for t in warn_at if cap and after >= cap * t]
    if reached:
        document["threshold"] = number(max(reached))
        warnings = ("approaching_limit",)
    if limit.enforcement == "soft" and after > cap:
        return Verdict(
            True,
            "soft_limit_exceeded",
            detail=f"'{name}' is past its soft limit of {limit.limit} this {period}",
            warnings=("soft_limit_exceeded", *warnings),
            limit=document,
        )
    return Verdict(True, "ok", warnings=warnings, limit=document)
