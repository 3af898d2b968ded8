"""The snapshot a check reads, and the request and decision it turns into.

A `Snapshot` is everything needed to decide any feature for one customer, compiled once and
shared read-only by every request of a worker: the catalog of the policy version the
customer's contract follows, the resolved plan, the contract in force (or the nearest one,
so "not started" and "expired" can be told apart), its overrides and add-ons.
Built only by `check/snapshot.py`; read only by `check/evaluator.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from allotment.billing.credit_balance import MonthWallet
from allotment.contracts.limits import SeatLimits
from allotment.policy.catalog import Catalog, InstancePool, Plan
from allotment.tenants.quotas import Quotas

ContractKind = Literal["standard", "trial", "educational", "pilot"]


@dataclass(frozen=True, slots=True)
class FeatureOverride:
    feature: str
    action: Literal["grant", "revoke"]
    expires_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class LimitOverride:
    meter: str
    limit: int
    expires_at: datetime | None
    reason: str


@dataclass(frozen=True, slots=True)
class ContractView:
    id: str
    revision: int
    plan: str
    kind: ContractKind
    starts_at: datetime
    ends_at: datetime | None  # the earlier of the term's end and a termination; None: open
    attributes: Mapping[str, Any]  # immutable: the plan's, overlaid by the contract's
    addons: frozenset[str]
    feature_overrides: tuple[FeatureOverride, ...]
    limit_overrides: tuple[LimitOverride, ...]
    pinned: bool  # the revision pins its policy version (else it follows the active one)
    seats: SeatLimits | None  # the seat pool in force (contract over plan); None: no seats
    instances: InstancePool | None  # the instance pool in force; None: no instances
    # Meter → units the bought add-ons add to its limit (contracts/addons.py).
    limit_raises: Mapping[str, int] = field(default_factory=dict)
    # Each bought add-on's quantity (1 unless bought more), and the bought seats and
    # instance licences (docs/contracts.md, "Bought quantities"): shown, never decided on.
    addon_quantities: Mapping[str, int] = field(default_factory=dict)
    quantities: Mapping[str, int | None] | None = None


@dataclass(frozen=True, slots=True)
class SessionHold:
    subject: str
    tenant: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class InstanceHold:
    weight: int
    tenant: str | None
    lease_expires_at: datetime
    ended: bool  # reaped (or ended by a re-registration) after its lease lapsed
    # What rules read as `instance` (docs/policy.md, "Rules and CEL"); None in a snapshot
    # payload cached before they were loaded (then a rule reading them fails, and denies).
    kind: str | None = None
    environment: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Holdings:
    """What the customer held when the snapshot was loaded: live seats (subject → tenant),
    sessions live at load, and each fingerprint's latest registration (live, or lapsed in
    the last day, so a late check hears `lease_expired` rather than `instance_unknown`).
    Leases are compared with `now` by the evaluator; the snapshot is reloaded at the earliest
    live expiry, so a renewal (which invalidates nothing) is seen by then."""

    members: Mapping[str, str | None] = field(default_factory=dict)
    guests: Mapping[str, str | None] = field(default_factory=dict)
    sessions: tuple[SessionHold, ...] = ()
    session_expiry: Mapping[str, datetime] = field(default_factory=dict)  # latest, per subject
    instances: Mapping[str, InstanceHold] = field(default_factory=dict)
    tenants: Mapping[str, Quotas] = field(default_factory=dict)
    as_of: datetime | None = None  # when they were loaded

    def live_sessions(self, now: datetime, tenant: str | None = None) -> int:
        return sum(
            1
            for s in self.sessions
            if now < s.expires_at and (tenant is None or s.tenant == tenant)
        )

    def instance_weight(self, now: datetime, tenant: str | None = None) -> tuple[int, int]:
        """(count, weight) of the instances whose lease is live at `now`."""
        count = weight = 0
        for hold in self.instances.values():
            live = not hold.ended and now < hold.lease_expires_at
            if live and (tenant is None or hold.tenant == tenant):
                count += 1
                weight += hold.weight
        return count, weight


NO_HOLDINGS = Holdings()


@dataclass(frozen=True, slots=True)
class MeterTotals:
    """A meter's use in the current hour, day and month (UTC) and contract year (read only
    for a plan with a yearly limit, else the month's): sums of its hourly counters, or for a
    `max` meter the greatest."""

    hour: Decimal = Decimal(0)
    day: Decimal = Decimal(0)
    month: Decimal = Decimal(0)
    year: Decimal = Decimal(0)

    def in_period(self, period: str) -> Decimal:
        if period == "month":
            return self.month
        return self.day if period == "day" else self.year if period == "year" else self.hour


NO_TOTALS = MeterTotals()


@dataclass(frozen=True, slots=True)
class Usage:
    """A customer's meter use as of `as_of` (read from the counters by the checker)."""

    as_of: datetime
    meters: Mapping[str, MeterTotals]  # every tenant together
    tenants: Mapping[tuple[str, str], MeterTotals]  # (meter, tenant)

    def of(self, meter: str, tenant: str | None = None) -> MeterTotals:
        if tenant is None:
            return self.meters.get(meter, NO_TOTALS)
        return self.tenants.get((meter, tenant), NO_TOTALS)


@dataclass(frozen=True, slots=True)
class Snapshot:
    customer: str
    known: bool  # False: no such customer (cached too, so probing keys stays cheap)
    state_version: int
    policy_version: int | None  # the version the contract follows (or the active one)
    catalog: Catalog | None  # None only when no policy was ever published
    contract: ContractView | None  # in force, else the next to start, else the last ended
    plan: Plan | None
    customer_attributes: Mapping[str, Any] = field(default_factory=dict)
    # Plan features plus add-on features, before overrides (which depend on `now`).
    base_features: frozenset[str] = frozenset()
    holdings: Holdings = NO_HOLDINGS
    customer_id: int | None = None  # the customers row's id (None: unknown customer)
    customer_name: str | None = None  # None: unknown customer, or a payload cached before


@dataclass(frozen=True, slots=True)
class CheckRequest:
    customer: str
    feature: str
    subject: str | None = None
    instance: str | None = None
    tenant: str | None = None
    consume: int | None = None
    context: Mapping[str, Any] | None = None
    usage: Usage | None = None  # set by the checker for metered features
    # PostgreSQL could not be read for the use and this worker knew none: a hard limit
    # then denies (unless the feature's on_outage allows), never allows blindly.
    usage_unavailable: bool = False
    # The customer's credit wallet, set by the checker when the plan enforces it
    # (check/credit_use.py); the credits gate finishes its balance with `usage`.
    wallet: MonthWallet | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the evaluator decides; the endpoint adds ids, versions and cache hints."""

    allowed: bool
    reason: str
    detail: str | None = None
    missing: tuple[str, ...] = ()  # dependency_missing: the features not entitled
    rule_reason: str | None = None  # rule_denied: the rule's own reason
    warnings: tuple[str, ...] = ()
    limit: Mapping[str, Any] | None = None
