"""The variables a policy rule reads, built for one check: only those the rule names, once.

    variable    value (docs/policy.md, "Rules and CEL")
    contract    {id, plan, kind, attributes, addons (sorted list), starts_at, ends_at, revision}
    customer    {key, attributes}
    subject     {id}            or None when the check names no subject
    instance    {fingerprint}   or None when the check names no instance
    tenant      {key}           or None when the check names no tenant
    usage       {}              (filled by the meter issue)
    seats       {}              (filled by the seat issue)
    instances   {}              (filled by the instance issue)
    now         the check's time, an aware datetime (a CEL timestamp)
    context     the request's `context`, or {}

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

from allotment.check.model import CheckRequest, ContractView, Snapshot
from allotment.policy.rules import RULE_VARIABLES, Rule


@lru_cache(maxsize=4096)
def rule_variables(rule: Rule) -> tuple[str, ...]:
    """The check variables `rule` reads. Names its macros bind (`t` in `exists(t, …)`) and
    the `cel` namespace are not check variables and are left out; a name the expression reads
    but this misses would fail evaluation, and so deny: never a silent allow."""
    return tuple(name for name in rule.program.variables() if name in RULE_VARIABLES)


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
    return {"key": snapshot.customer, "attributes": dict(snapshot.customer_attributes)}


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
    return None if request.subject is None else {"id": request.subject}


def _instance(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    return None if request.instance is None else {"fingerprint": request.instance}


def _tenant(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    return None if request.tenant is None else {"key": request.tenant}


def _empty(snapshot: Snapshot, request: CheckRequest, now: datetime) -> Any:
    return {}


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
    "usage": _empty,
    "seats": _empty,
    "instances": _empty,
    "now": _now,
    "context": _context,
}


_STATIC = frozenset({"contract", "customer", "usage", "seats", "instances"})
"""The variables that depend on the snapshot only, never on the request."""


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
