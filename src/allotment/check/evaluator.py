"""The decision behind /v1/check: a pure function of (snapshot, request, now) to a Verdict.

No I/O, no clock reads, no logging: the caller brings the snapshot and `now`, and gets the
same verdict for the same inputs. The first step that fails decides:

    step                                             reason
    1  the customer exists                           customer_unknown
    2  the feature is in the catalog                 feature_unknown
    3  the customer has a contract                   no_active_contract
    4  the contract has started / has not ended      contract_not_started,
                                                     trial_expired | contract_expired
    5  the feature is entitled at `now`              feature_not_in_plan
    6  every feature it requires is entitled too     dependency_missing (`missing`)
    7  every rule of the feature holds, in order     rule_denied (`rule_reason`);
       (a rule reading `instance` / `tenant`         instance_unknown, lease_expired,
       first needs the one named to be held)         tenant_unknown (as the gates say)
    8  every gate passes, in order                   the gate's own reason
    9                                                ok

Entitled at `now` (`entitled_features`) = the plan's and the add-ons' features
(`Snapshot.base_features`), plus the contract's grant overrides, minus its revoke overrides;
an override counts while `now < expires_at` (or forever without one) and a revoke beats
any grant, plan or add-on.

Gates (step 8) are the seam for the checks that need more than the catalog — seats,
instances, meters, tenant quotas: each is a `Gate`, run in order after the rules, that
returns None to pass, a denying Verdict to decide, or an allowing Verdict to carry its
warnings (e.g. `soft_limit_exceeded`) onto the final answer. `GATES` lists them.

Hot path: a feature without rules costs a few attribute reads, two datetime comparisons and
two set lookups; the `ok` verdict is a shared constant, and nothing is allocated unless the
contract has feature overrides (then the entitled set is computed once per call, or once per
batch in `evaluate_many`). Rule variables are built lazily (see `activation.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial

from allotment.check import credits as credit_gate
from allotment.check import gates
from allotment.check.activation import Activation, reads
from allotment.check.values import CheckRequest, ContractView, Snapshot, Verdict
from allotment.kit.clock import isoformat
from allotment.policy.catalog import Feature
from allotment.policy.rules import Rule

__all__ = [
    "CUSTOMER_GATES",
    "GATES",
    "OK",
    "Gate",
    "entitled_features",
    "evaluate",
    "evaluate_many",
    "term",
]

Gate = Callable[[Snapshot, CheckRequest, Feature, datetime], Verdict | None]
"""A check after the rules: None passes; a Verdict with `allowed=False` decides; one with
`allowed=True` passes and carries its reason, warnings and limit onto the final verdict.
A gate reads the feature from its `Feature` argument, never from `request.feature` (a batch
hands every feature the same request)."""

GATES: tuple[Gate, ...] = (
    gates.seat,
    gates.instance,
    gates.tenant,
    gates.meter,
    credit_gate.credits,
)
"""The gates every check runs, in order (step 8): see `check/gates.py`."""


CUSTOMER_GATES: tuple[Gate, ...] = (gates.meter, credit_gate.credits)
"""The gates of a customer-level view (the entitlements document, docs/check.md): those that
need no subject, instance or tenant, so a feature whose meter or credits are used up is
denied there as a check without them denies it."""


def gates_warning_at(
    warn_at: tuple[Decimal, ...], chosen: tuple[Gate, ...] = GATES
) -> tuple[Gate, ...]:
    """`chosen` (`GATES` by default), with the meter gate warning at `warn_at` of a limit
    (the checker's setting); `chosen` itself for the default thresholds, so the usual check
    calls no partial."""
    if warn_at == gates.WARN_AT:
        return chosen
    return tuple(partial(g, warn_at=warn_at) if g is gates.meter else g for g in chosen)


OK = Verdict(allowed=True, reason="ok")  # frozen: one instance serves every allowed check
_NO_ACTIVE_CONTRACT = Verdict(
    allowed=False, reason="no_active_contract", detail="the customer has no contract"
)
_NO_FEATURE: frozenset[str] = frozenset()


def entitled_features(snapshot: Snapshot, now: datetime) -> frozenset[str]:
    """The features the contract entitles at `now`: base features, plus unexpired grants,
    minus unexpired revokes (a revoke wins over a grant, the plan and the add-ons).

    The contract's term is not considered here (the verdict says `contract_expired` and
    the like); an unknown customer is entitled to nothing. Names are not checked against
    the catalog: an override may name a feature a later policy removed.
    """
    if not snapshot.known:
        return _NO_FEATURE
    contract = snapshot.contract
    if contract is None or not contract.feature_overrides:
        return snapshot.base_features
    granted: set[str] = set()
    revoked: set[str] = set()
    for override in contract.feature_overrides:
        if override.expires_at is None or now < override.expires_at:
            (revoked if override.action == "revoke" else granted).add(override.feature)
    if not granted and not revoked:
        return snapshot.base_features
    return frozenset((snapshot.base_features | granted) - revoked)


def evaluate(
    snapshot: Snapshot,
    request: CheckRequest,
    now: datetime,
    *,
    gates: Sequence[Gate] | None = None,
) -> Verdict:
    """Decide `request.feature` for the snapshot's customer at `now` (an aware datetime).

    `gates` replaces `GATES` (tests, and callers that want the catalog-only answer: `()`).
    """
    if not snapshot.known:
        return _customer_unknown(snapshot)
    catalog = snapshot.catalog
    feature = None if catalog is None else catalog.features.get(request.feature)
    if feature is None:
        return _feature_unknown(request.feature)
    contract = snapshot.contract
    if contract is None:
        return _NO_ACTIVE_CONTRACT
    term = _term(contract, now)
    if term is not None:
        return term
    return _decide(
        snapshot,
        request,
        feature,
        now,
        entitled_features(snapshot, now) if contract.feature_overrides else snapshot.base_features,
        None,
        GATES if gates is None else gates,
    )


def evaluate_many(
    snapshot: Snapshot,
    features: Sequence[str],
    base: CheckRequest,
    now: datetime,
    *,
    gates: Sequence[Gate] | None = None,
) -> list[Verdict]:
    """`evaluate` for each of `features` (in order), as `base` with its feature replaced.

    Equal, feature by feature, to calling `evaluate`; the contract's term, the entitled set
    and the rule variables are worked out once for the whole batch.
    """
    if not snapshot.known:
        unknown = _customer_unknown(snapshot)
        return [unknown] * len(features)
    catalog = snapshot.catalog
    contract = snapshot.contract
    term = _NO_ACTIVE_CONTRACT if contract is None else _term(contract, now)
    chosen = GATES if gates is None else gates
    entitled = entitled_features(snapshot, now)
    activation: Activation | None = None
    verdicts: list[Verdict] = []
    decided: dict[str, Verdict] = {}  # a feature named twice is decided once (pure)
    for name in features:
        again = decided.get(name)
        if again is not None:
            verdicts.append(again)
            continue
        feature = None if catalog is None else catalog.features.get(name)
        if feature is None:
            verdicts.append(_feature_unknown(name))
            continue
        if term is not None:
            verdicts.append(term)
            continue
        if activation is None and catalog is not None and catalog.rules_for(name):
            activation = Activation(snapshot, base, now)
        # Gates are handed the Feature; none reads `request.feature`, so the batch's base
        # request serves every feature without a per-feature copy.
        verdict = _decide(snapshot, base, feature, now, entitled, activation, chosen)
        decided[name] = verdict
        verdicts.append(verdict)
    return verdicts


def _decide(
    snapshot: Snapshot,
    request: CheckRequest,
    feature: Feature,
    now: datetime,
    entitled: frozenset[str],
    activation: Activation | None,
    gates: Sequence[Gate],
) -> Verdict:
    """Steps 5 to 9, once the customer, the feature and the contract's term are settled."""
    name = feature.name
    if name not in entitled:
        return _not_in_plan(snapshot, name, now)
    if not feature.closure <= entitled:
        missing = tuple(sorted(feature.closure - entitled))
        return Verdict(
            allowed=False,
            reason="dependency_missing",
            detail=f"'{name}' requires {', '.join(repr(m) for m in missing)}, not entitled",
            missing=missing,
        )
    catalog = snapshot.catalog
    rules = () if catalog is None else catalog.rules_for(name)
    if rules:
        if request.instance is not None or request.tenant is not None:
            stranger = _stranger(snapshot, request, rules, now)
            if stranger is not None:
                return stranger
        if activation is None:
            activation = Activation(snapshot, request, now)
        for rule in rules:
            if not activation.check(rule):
                return Verdict(
                    allowed=False,
                    reason="rule_denied",
                    detail=f"a rule of '{name}' does not hold: {rule.reason}",
                    rule_reason=rule.reason,
                )
    if not gates:
        return OK
    carried: Verdict | None = None
    for gate in gates:
        verdict = gate(snapshot, request, feature, now)
        if verdict is None:
            continue
        if not verdict.allowed:
            return verdict
        carried = verdict if carried is None else _carry(carried, verdict)
    return OK if carried is None else carried


def _stranger(
    snapshot: Snapshot, request: CheckRequest, rules: tuple[Rule, ...], now: datetime
) -> Verdict | None:
    """Step 7's first part: the instance or tenant the request names, when a rule reads it
    and the customer does not hold it, answers as the gates would (instance_unknown,
    lease_expired, tenant_unknown) rather than as a rule that failed on it."""
    if request.instance is not None and reads(rules, "instance"):
        verdict = gates.instance_held(snapshot, request.instance, now)
        if verdict is not None:
            return verdict
    if (
        request.tenant is not None
        and request.tenant not in snapshot.holdings.tenants
        and reads(rules, "tenant")
    ):
        return gates.tenant_unknown(request.tenant)
    return None


def term(contract: ContractView | None, now: datetime) -> Verdict | None:
    """Step 4 (and 3) on their own: None while `contract` is in force at `now`, else the
    denial a check would answer (no_active_contract, contract_not_started,
    trial_expired, contract_expired). OFREP's limit flags read it (ofrep/mapping.py)."""
    return _NO_ACTIVE_CONTRACT if contract is None else _term(contract, now)


def _term(contract: ContractView, now: datetime) -> Verdict | None:
    """Step 4: the contract's term at `now`, half-open [starts_at, ends_at)."""
    if now < contract.starts_at:
        return Verdict(
            allowed=False,
            reason="contract_not_started",
            detail=f"the contract starts at {isoformat(contract.starts_at)}",
        )
    if contract.ends_at is not None and now >= contract.ends_at:
        trial = contract.kind == "trial"
        return Verdict(
            allowed=False,
            reason="trial_expired" if trial else "contract_expired",
            detail=f"the {'trial' if trial else 'contract'} ended at {isoformat(contract.ends_at)}",
        )
    return None


def _customer_unknown(snapshot: Snapshot) -> Verdict:
    return Verdict(
        allowed=False, reason="customer_unknown", detail=f"no customer '{snapshot.customer}'"
    )


def _feature_unknown(name: str) -> Verdict:
    return Verdict(
        allowed=False, reason="feature_unknown", detail=f"no feature '{name}' in the policy"
    )


def _not_in_plan(snapshot: Snapshot, name: str, now: datetime) -> Verdict:
    contract = snapshot.contract
    if contract is not None:
        for override in contract.feature_overrides:
            if (
                override.feature == name
                and override.action == "revoke"
                and (override.expires_at is None or now < override.expires_at)
            ):
                return Verdict(
                    allowed=False,
                    reason="feature_not_in_plan",
                    detail=f"'{name}' is revoked for this contract: {override.reason}",
                )
    plan = "" if contract is None else f" '{contract.plan}'"
    return Verdict(
        allowed=False,
        reason="feature_not_in_plan",
        detail=f"'{name}' is not in plan{plan} or the contract's add-ons",
    )


def _carry(earlier: Verdict, later: Verdict) -> Verdict:
    """Two allowing gate verdicts as one: the later reason and limit, every warning."""
    return Verdict(
        allowed=True,
        reason=later.reason,
        detail=later.detail if later.detail is not None else earlier.detail,
        warnings=earlier.warnings + later.warnings,
        limit=later.limit if later.limit is not None else earlier.limit,
    )
