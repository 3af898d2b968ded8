"""The variables a policy rule reads, built for one check: only those the rule names, once.

    variable    value (docs/policy.md, "Rules and CEL"; policy/rule_fields.FIELDS)
    contract    {id, plan, kind, attributes, addons (sorted list), starts_at, ends_at, revision}
    customer    {key, name, attributes}
    subject     {id, seat}      seat: "member" (a member seat, or a live session of a
                                concurrent pool), "guest", or None (holds none);
                                the variable is None when the check names no subject
    instance    {fingerprint, kind, environment, metadata, lease_expires_at}
                                or None when the check names no instance
    tenant      {key, quotas}   quotas as the tenant's API shows them ({seats?, instances?,
                                meters?}); None when the check names no tenant
    usage       {meter: units}  every meter of the policy: the customer's use (all tenants)
                                in the period of the meter's limit in force (month without
                                one), from `request.usage`; 0 when it was not read, as the
                                meter gate counts it
    seats       {limit, used, guests, guests_used}   the seat pool in force (0 without one);
                                used: member seats, or live sessions of a concurrent pool
    instances   {limit, used}   the instance pool in force (0 without one); used: live weight
    now         the check's time, an aware datetime (a CEL timestamp)
    context     the request's `context`, or {}

The evaluator answers instance_unknown / lease_expired / tenant_unknown before a rule that
reads `instance` / `tenant` runs on a stranger (gates.instance_held, gates.tenant_unknown);
the checker reads meter use for a check whose feature has a rule reading `usage`
(`reads`), as it does for a metered feature.

Handing CEL a variable costs far more than building it: the binding converts every value of
the activation on each `execute`, nested maps and timestamps included (about 10-40 µs for
`contract` alone). So an `Activation` builds each variable on first use and gives each rule
only the variables its expression names (`rule_variables`), never the whole set.
Pure: no I/O, no clock reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from threading import local
from typing import Any

import cel

from allotment.check import gates
from allotment.check.values import CheckRequest, ContractView, Holdings, Snapshot
from allotment.policy.rules import RULE_VARIABLES, Rule


@lru_cache(maxsize=4096)
def rule_variables(rule: Rule) -> tuple[str, ...]:
    """The check variables `rule` reads. Names its macros bind (`t` in `exists(t, …)`) and
    the `cel` namespace are not check variables and are left out; a name the expression reads
    but this misses would fail evaluation, and so deny: never a silent allow."""
    return tuple(name for name in rule.program.variables() if name in RULE_VARIABLES)


def reads(rules: tuple[Rule, ...], name: str) -> bool:
    """Whether any of `rules` reads the check variable `name`."""
    return any(name in rule_variables(rule) for rule in rules)


def contract_variable(contract: ContractView) -> dict[str, Any]:
    return {
        "id": contract.id,
        "plan": contract.plan,
        "kind": contract.kind,
        # CEL takes lists and dicts; a frozenset or an arbitrary Mapping may not convert.
        "attributes": dict(contract.attributes),
        "addons": sorted(contract.addons),
        "starts_at": contract.starts_at,
        "ends_at": contract.ends_at,
        "revision": contract.revision,
    }


def customer_variable(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "key": snapshot.customer,
        "name": snapshot.customer_name,
        "attributes": dict(snapshot.customer_attributes),
    }


def seat_of(holdings: Holdings, subject: str, now: datetime) -> str | None:
    """`subject.seat`: what `subject` holds at `now`, as the seat gate sees it."""
    if subject in holdings.members:
        return "member"
    if subject in holdings.guests:
        return "guest"
    expiry = holdings.session_expiry.get(subject)
    return "member" if expiry is not None and now < expiry else None


class Activation:
    """The rule variables of one check (or one batch: they do not depend on the feature).

    Not shared between requests: `now`, `subject`, `context`… belong to the request.
    """

    __slots__ = ("_snapshot", "_request", "_now", "_values")

    def check(self, rule: Rule) -> bool:
        """`rule.evaluate(self.for_rule(rule))`, faster when the rule reads the snapshot.

        The snapshot's variables (contract, customer…) are converted to CEL once per snapshot
        and thread (`_prepared`); the request's variables the rule reads reach CEL through
        the context's resolver. A request variable that is None (no subject…) would fall
        through the resolver, so such rules take the plain path.
        """
        names = rule_variables(rule)
        if _STATIC.isdisjoint(names):
            return rule.evaluate(self.for_rule(rule))
        prepared = _prepared(self._snapshot)
        holder = prepared.holder
        holder.clear()
        values = self._values
        for name in names:
            if name in _STATIC:
                continue
            if name not in values:
                values[name] = _BUILDERS[name](self._snapshot, self._request, self._now)
            value = values[name]
            if value is None:
                return rule.evaluate(self.for_rule(rule))
            holder[name] = value
        try:
            return rule.evaluate_in(prepared.context)
        finally:
            holder.clear()

    def __init__(self, snapshot: Snapshot, request: CheckRequest, now: datetime) -> None:
        self._snapshot = snapshot
        self._request = request
        self._now = now
        self._values: dict[str, Any] = {}

    def for_rule(self, rule: Rule) -> dict[str, Any]:
        """The variables `rule` reads, each built at most once per activation."""
        values = self._values
        activation: dict[str, Any] = {}
        for name in rule_variables(rule):
            if name not in values:
                values[name] = _BUILDERS[name](self._snapshot, self._request, self._now)
            activation[name] = values[name]
        return activation

    def full(self) -> dict[str, Any]:
        """Every variable, for callers that show or log the whole activation."""
        return {
            name: build(self._snapshot, self._request, self._now)
            for name, build in _BUILDERS.items()
        }


def _contract(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    # The evaluator runs rules only once a contract is in force; None keeps this total.
    return None if snapshot.contract is None else contract_variable(snapshot.contract)


def _customer(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    return customer_variable(snapshot)


def _subject(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    subject = request.subject
    if subject is None:
        return None
    return {"id": subject, "seat": seat_of(snapshot.holdings, subject, now)}


def _instance(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    fingerprint = request.instance
    if fingerprint is None:
        return None
    hold = snapshot.holdings.instances.get(fingerprint)
    if hold is None:  # the evaluator answers instance_unknown before a rule reads this
        return {
            "fingerprint": fingerprint,
            "kind": None,
            "environment": None,
            "metadata": None,
            "lease_expires_at": None,
        }
    return {
        "fingerprint": fingerprint,
        "kind": hold.kind,
        "environment": hold.environment,
        "metadata": None if hold.metadata is None else dict(hold.metadata),
        "lease_expires_at": hold.lease_expires_at,
    }


def _tenant(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    key = request.tenant
    if key is None:
        return None
    quotas = snapshot.holdings.tenants.get(key)
    return {"key": key, "quotas": None if quotas is None else quotas.to_json()}


def _usage(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    catalog = snapshot.catalog
    if catalog is None:
        return {}
    usage = request.usage
    if usage is None:
        return {name: 0 for name, meter in catalog.meters.items() if not meter.is_level()}
    found: dict[str, Any] = {}
    for name, meter in catalog.meters.items():
        if meter.is_level():  # an average or a percentile: no use to read (docs/usage.md)
            continue
        limit = gates.meter_limit(snapshot, name, now)
        period = "month" if limit is None else limit.period
        found[name] = gates.number(usage.of(name).in_period(period))
    return found


def _seats(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    pool = snapshot.contract.seats if snapshot.contract is not None else None
    holdings = snapshot.holdings
    concurrent = pool is not None and pool.model == "concurrent"
    return {
        "limit": 0 if pool is None else pool.limit,
        "used": holdings.live_sessions(now) if concurrent else len(holdings.members),
        "guests": 0 if pool is None else pool.guests,
        "guests_used": len(holdings.guests),
    }


def _instances(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    pool = snapshot.contract.instances if snapshot.contract is not None else None
    return {
        "limit": 0 if pool is None else pool.limit,
        "used": snapshot.holdings.instance_weight(now)[1],
    }


def _now(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    return now


def _context(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    return {} if request.context is None else dict(request.context)


# One builder per name of RULE_VARIABLES (tests/check/test_evaluator.py keeps them equal).
_BUILDERS: Mapping[str, Callable[[Snapshot, CheckRequest, datetime], Any]] = {
    "contract": _contract,
    "customer": _customer,
    "subject": _subject,
    "instance": _instance,
    "tenant": _tenant,
    "usage": _usage,
    "seats": _seats,
    "instances": _instances,
    "now": _now,
    "context": _context,
}


_STATIC = frozenset({"contract", "customer"})
"""The variables that depend on the snapshot only, never on the request or `now` (seats and
instances count what is live at `now`; usage is the request's)."""


class _Prepared:
    """A snapshot's static variables, converted to CEL once, and a resolver for the rest."""

    __slots__ = ("snapshot", "context", "holder")

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot  # a strong reference: its id is not reused while cached
        self.holder: dict[str, Any] = {}
        # _STATIC's builders read the snapshot only; the request and `now` are not used.
        self.context = cel.Context(
            {name: _BUILDERS[name](snapshot, _NO_REQUEST, _EPOCH) for name in sorted(_STATIC)}
        )
        self.context.set_variable_resolver(self.holder.get)


_CACHE_SIZE = 256
_local = local()  # cel.Context is not thread-safe: one cache per thread


def _prepared(snapshot: Snapshot) -> _Prepared:
    cache: dict[int, _Prepared] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = id(snapshot)
    found = cache.get(key)
    if found is not None and found.snapshot is snapshot:
        return found
    if len(cache) >= _CACHE_SIZE:
        del cache[next(iter(cache))]  # oldest first
    found = cache[key] = _Prepared(snapshot)
    return found


_NO_REQUEST = CheckRequest(customer="", feature="")
_EPOCH = datetime(1970, 1, 1)
