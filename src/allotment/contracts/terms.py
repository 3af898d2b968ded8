"""Contract terms, pure: what a revision stores, how it is checked against a catalog, and the
limits it grants at a given moment. No I/O, no clock reads.

    Terms                      one revision's terms, as stored in `contract_revisions.terms`
     ├── seats: SeatTerms | None         None: the plan's seat pool as is
     ├── instances: InstanceTerms | None None: the plan's instance pool as is
     ├── quantities: Quantities | None   bought seats / instance licences (basis contracted)
     ├── addons, addon_quantities        names, and (name, quantity) of those bought > 1
     ├── discount_percent, discount_reason
     └── overrides: (Override, ...)      grant/revoke a feature, or set a meter's limit
    check_terms(terms, catalog)  → [{path, message}]   every problem, by request path
    initial_attributes(plan, requested)                 the immutable attributes at creation
    effective_limits (contracts/limits.py)             the limits in force at a moment
    status(...), overlaps(...)                          where a term stands in time

Seats, instances and meter limits a contract does not set follow its plan in the catalog of
the contract's policy version (pinned, or the active one), so publishing a policy changes
them for every unpinned contract; attributes, by contrast, are copied at creation and never
change (docs/design.md, "Concepts": the immutable layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from allotment.contracts import addons as contract_addons
from allotment.kit.clock import isoformat
from allotment.policy.catalog import (
    Addon,
    Catalog,
    Enforcement,
    Period,
    Plan,
)
from allotment.policy.durations import format_duration, parse_duration

if TYPE_CHECKING:
    from allotment.contracts.limits import EffectiveLimits

Kind = Literal["standard", "trial", "educational", "pilot"]
KINDS: tuple[Kind, ...] = ("standard", "trial", "educational", "pilot")
# Kinds that must carry a discount percent and an expiry (docs/contracts.md); a trial is
# credited in full instead, and a standard contract may carry a negotiated discount, with its
# reason.
DISCOUNTED_KINDS = frozenset({"educational", "pilot"})
EXPIRING_KINDS = frozenset({"trial", "educational", "pilot"})

Status = Literal["scheduled", "active", "expired", "terminated"]
Problem = dict[str, str]

# An override's meter limit, when the plan does not limit that meter at all.
DEFAULT_PERIOD: Period = "month"
DEFAULT_ENFORCEMENT: Enforcement = "hard"


class TermsOutOfCatalog(LookupError):
    """The contract's plan is not in the catalog it follows (removed by a later policy)."""


# -- the terms -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurstTerms:
    extra: int
    window: timedelta | None  # None: the plan's burst window


@dataclass(frozen=True)
class SeatTerms:
    limit: int
    burst: BurstTerms | None  # None: the plan's burst


@dataclass(frozen=True)
class InstanceTerms:
    limit: int


@dataclass(frozen=True)
class Quantities:
    """What the contract bought: billed whatever is used, under a `contracted` price basis
    (docs/contracts.md, "Bought quantities"). None: not bought."""

    seats: int | None = None
    instances: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seats": self.seats, "instances": self.instances}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Quantities:
        return cls(seats=value.get("seats"), instances=value.get("instances"))


@dataclass(frozen=True)
class Override:
    """A feature grant or revocation (`feature`, `action`) or a meter limit (`meter`, `limit`)."""

    reason: str
    expires_at: datetime | None = None
    feature: str | None = None
    action: Literal["grant", "revoke"] | None = None
    meter: str | None = None
    limit: int | None = None

    def in_force(self, at: datetime) -> bool:
        return self.expires_at is None or at < self.expires_at

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = (
            {"feature": self.feature, "action": self.action}
            if self.feature is not None
            else {"meter": self.meter, "limit": self.limit}
        )
        out["expires_at"] = _iso(self.expires_at)
        out["reason"] = self.reason
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Override:
        return cls(
            reason=value["reason"],
            expires_at=_dt(value.get("expires_at")),
            feature=value.get("feature"),
            action=value.get("action"),
            meter=value.get("meter"),
            limit=value.get("limit"),
        )


@dataclass(frozen=True)
class Terms:
    """Everything a contract says, as in force from one revision's `effective_at`."""

    plan: str
    kind: Kind
    starts_at: datetime
    ends_at: datetime | None  # the end of the term (after a termination: where it ended)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    seats: SeatTerms | None = None
    instances: InstanceTerms | None = None
    addons: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()
    discount_percent: Decimal | None = None
    policy_version: int | None = None  # pinned; None follows the active version
    terminated_at: datetime | None = None  # when a termination was recorded to take effect
    quantities: Quantities | None = None
    # The currency it is billed in (fixed at creation); None: the policy's own currency.
    currency: str | None = None
    # (name, quantity) of the add-ons bought more than once; any other listed add-on: 1.
    addon_quantities: tuple[tuple[str, int], ...] = ()
    discount_reason: str | None = None  # required with a standard contract's discount

    def replace(self, **changes: Any) -> Terms:
        return dataclasses.replace(self, **changes)

    def quantity(self, addon: str) -> int:
        return dict(self.addon_quantities).get(addon, 1)

    def to_json(self) -> dict[str, Any]:
        # `quantities` only when bought: terms without it store the bytes they always did.
        bought = {} if self.quantities is None else {"quantities": self.quantities.to_json()}
        return {
            **bought,
            "plan": self.plan,
            "kind": self.kind,
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "terminated_at": _iso(self.terminated_at),
            "attributes": dict(self.attributes),
            "seats": None
            if self.seats is None
            else {
                "limit": self.seats.limit,
                "burst": None
                if self.seats.burst is None
                else {
                    "extra": self.seats.burst.extra,
                    "window": None
                    if self.seats.burst.window is None
                    else format_duration(self.seats.burst.window),
                },
            },
            "instances": None if self.instances is None else {"limit": self.instances.limit},
            "addons": list(self.addons),
            "overrides": [o.to_json() for o in self.overrides],
            "discount_percent": None
            if self.discount_percent is None
            else str(self.discount_percent),
            "policy_version": self.policy_version,
            # Written only when chosen: terms stored before currencies existed read the same.
            **({"currency": self.currency} if self.currency is not None else {}),
            # Written only when used, so terms stored before they existed read the same.
            **({"addon_quantities": dict(self.addon_quantities)} if self.addon_quantities else {}),
            **({"discount_reason": self.discount_reason} if self.discount_reason else {}),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Terms:
        seats = value.get("seats")
        burst = seats.get("burst") if seats else None
        instances = value.get("instances")
        discount = value.get("discount_percent")
        quantities = value.get("quantities")
        return cls(
            plan=value["plan"],
            kind=value["kind"],
            starts_at=_required_dt(value["starts_at"]),
            ends_at=_dt(value.get("ends_at")),
            terminated_at=_dt(value.get("terminated_at")),
            attributes=MappingProxyType(dict(value.get("attributes") or {})),
            seats=None
            if seats is None
            else SeatTerms(
                limit=seats["limit"],
                burst=None
                if burst is None
                else BurstTerms(
                    extra=burst["extra"],
                    window=None if burst.get("window") is None else parse_duration(burst["window"]),
                ),
            ),
            instances=None if instances is None else InstanceTerms(limit=instances["limit"]),
            addons=tuple(value.get("addons") or ()),
            overrides=tuple(Override.from_json(o) for o in value.get("overrides") or ()),
            discount_percent=None if discount is None else Decimal(discount),
            policy_version=value.get("policy_version"),
            quantities=None if quantities is None else Quantities.from_json(quantities),
            currency=value.get("currency"),
            addon_quantities=tuple(sorted((value.get("addon_quantities") or {}).items())),
            discount_reason=value.get("discount_reason"),
        )


@dataclass(frozen=True)
class ContractTerms:
    """A contract and the revision of it in force at some moment (`current_terms`)."""

    contract_id: str
    customer_id: int
    revision: int  # the revision in force, not necessarily the latest
    effective_at: datetime  # when that revision took effect
    terms: Terms  # term bounds (starts_at, ends_at, terminated_at) are the contract's own

    def limits(self, catalog: Catalog, *, at: datetime) -> EffectiveLimits:
        from allotment.contracts.limits import effective_limits  # it builds on Terms

        return effective_limits(self.terms, catalog, at=at)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else isoformat(value)


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _required_dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- creation --------------------------------------------------------------------------------


def initial_attributes(plan: Plan | None, requested: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's attributes, then the request's on top: fixed from here on."""
    merged: dict[str, Any] = dict(plan.attributes) if plan is not None else {}
    merged.update(requested)
    return merged


# -- validation ------------------------------------------------------------------------------


def check_terms(terms: Terms, catalog: Catalog, *, version: int) -> list[Problem]:
    """Every problem with `terms` under `catalog` (policy `version`), each with its path.

    Paths are those of the request body (`seats.burst.window`, `addons[1]`,
    `overrides[0].feature`), so a 422 points at what to fix.
    """
    problems: list[Problem] = []

    def problem(path: str, message: str) -> None:
        problems.append({"path": path, "message": message})

    plan = catalog.plans.get(terms.plan)
    if plan is None:
        known = ", ".join(sorted(catalog.plans)) or "none"
        problem("plan", f"no plan '{terms.plan}' in policy version {version} (plans: {known})")

    if terms.ends_at is not None and terms.ends_at <= terms.starts_at:
        problem("ends_at", "ends_at must be after starts_at")
    if terms.kind in EXPIRING_KINDS and terms.ends_at is None:
        problem("ends_at", f"a {terms.kind} contract needs an end (ends_at)")
    if terms.kind in DISCOUNTED_KINDS and terms.discount_percent is None:
        problem("discount_percent", f"a {terms.kind} contract carries a discount_percent")
    if terms.kind == "trial" and terms.discount_percent is not None:
        problem("discount_percent", "a trial contract carries no discount: it is credited in full")
    elif (
        terms.kind == "standard"
        and terms.discount_percent is not None
        and not terms.discount_reason
    ):
        problem(
            "discount_reason",
            "required with a discount on a standard contract: why it was negotiated",
        )
    if terms.discount_reason is not None and terms.discount_percent is None:
        problem("discount_reason", "a reason goes with a discount_percent; there is none")

    currency = terms.currency or catalog.currency
    foreign = currency != catalog.currency  # priced by the plan's and add-ons' price lists
    if plan is not None and foreign and currency not in plan.price_lists:
        listed = ", ".join(sorted(plan.price_lists)) or "none"
        problem(
            "currency",
            f"plan '{plan.name}' has no {currency} price list in policy version {version} "
            f"(its prices are in {catalog.currency}; price lists: {listed})",
        )

    if plan is not None:
        _check_seats(terms, plan, problem)
        if terms.instances is not None and plan.instances is None:
            problem("instances", f"plan '{plan.name}' has no instance pool to size")
        bought_addons = [catalog.addons[n] for n in terms.addons if n in catalog.addons]
        _check_quantities(terms, plan, bought_addons, problem)

    problems += contract_addons.check(terms, catalog, version=version)

    targets: set[tuple[str, str]] = set()
    for index, override in enumerate(terms.overrides):
        path = f"overrides[{index}]"
        if override.feature is not None:
            target = ("feature", override.feature)
            if override.feature not in catalog.features:
                problem(
                    f"{path}.feature",
                    f"no feature '{override.feature}' in policy version {version}",
                )
        else:
            target = ("meter", override.meter or "")
            found = catalog.meters.get(override.meter or "")
            if found is None:
                problem(f"{path}.meter", f"no meter '{override.meter}' in policy version {version}")
            elif found.is_level():
                problem(f"{path}.meter", f"meter '{found.name}' is a level: it takes no limit")
        if target in targets:
            problem(path, f"{target[0]} '{target[1]}' is overridden twice; keep one override")
        targets.add(target)
        if override.expires_at is not None and override.expires_at <= terms.starts_at:
            problem(f"{path}.expires_at", "an override must expire after the contract starts")
    return problems


def _check_seats(terms: Terms, plan: Plan, problem: Callable[[str, str], None]) -> None:
    if terms.seats is None:
        return
    if plan.seats is None:
        problem("seats", f"plan '{plan.name}' has no seat pool to size")
        return
    burst = terms.seats.burst
    if burst is not None and burst.extra > 0 and plan.seats.model == "concurrent":
        problem(
            "seats.burst",
            f"plan '{plan.name}' has concurrent (floating) seats, which have no burst: a "
            "session is refused once the pool is full; leave burst out or give extra: 0",
        )
        return
    if burst is not None and burst.extra > 0 and burst.window is None and plan.seats.burst is None:
        problem(
            "seats.burst.window",
            f"plan '{plan.name}' has no burst window to inherit; give one (e.g. 72h)",
        )


def _check_quantities(
    terms: Terms, plan: Plan, addons: Sequence[Addon], problem: Callable[[str, str], None]
) -> None:
    """A price on the bought quantity (basis contracted, a one-time fee or a yearly add-on
    charged per unit) needs it; a quantity nothing bills is a mistake."""
    bought = terms.quantities or Quantities()
    seat = plan.price.seat
    licence = plan.price.instance_licence
    for name, price, quantity, what in (
        ("seats", seat, bought.seats, "price.seat"),
        ("instances", licence, bought.instances, "price.instance_licence"),
    ):
        contracted = price is not None and price.basis == "contracted"
        users = [f"{what}.basis contracted"] if contracted else []
        per_fee = plan.price.one_time_per
        users += [f"price.one_time_per.{fee}" for fee, per in per_fee.items() if per == name]
        users += [f"add-on '{addon.name}' (per: {name})" for addon in addons if addon.per == name]
        if users and quantity is None:
            problem(
                f"quantities.{name}",
                f"plan '{plan.name}' bills {name} on the contracted quantity "
                f"({', '.join(users)}): give quantities.{name}",
            )
        elif not users and quantity is not None:
            problem(
                f"quantities.{name}",
                f"plan '{plan.name}' does not bill {name} on a contracted quantity ({what} "
                f"is not basis contracted, and no one-time fee or add-on is charged per "
                f"{name[:-1]}): leave quantities.{name} out",
            )


# -- time ------------------------------------------------------------------------------------


def status(
    *,
    starts_at: datetime,
    ends_at: datetime | None,
    terminated_at: datetime | None,
    now: datetime,
) -> Status:
    """Where a contract stands at `now`; a termination scheduled for later is not yet one."""
    if terminated_at is not None and now >= terminated_at:
        return "terminated"
    if now < starts_at:
        return "scheduled"
    if ends_at is not None and now >= ends_at:
        return "expired"
    return "active"


def overlaps(a: tuple[datetime, datetime | None], b: tuple[datetime, datetime | None]) -> bool:
    """Whether two half-open terms [start, end) share an instant; None is an open end.

    An empty term (a contract cancelled before it started) shares none.
    """
    (a_start, a_end), (b_start, b_end) = a, b
    if (a_end is not None and a_end <= a_start) or (b_end is not None and b_end <= b_start):
        return False
    return (b_end is None or a_start < b_end) and (a_end is None or b_start < a_end)
