"""Hypothesis properties of the check evaluator over random catalogs, contracts and overrides.

Catalogs are random DAGs of features (fi may require only fj, j < i), one or two plans,
add-ons and a few rules; contracts pick a plan, kind, term, add-ons and overrides with
expiries before, at and after `now`. The oracles here (closures, the entitled set) are
computed independently of the compiler and the evaluator.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.check.evaluator import entitled_features, evaluate, evaluate_many
from allotment.check.values import CheckRequest, ContractView, FeatureOverride, Snapshot
from allotment.policy import Catalog
from tests.check.snapshots import NOW, compile_dict

# Per test, not a global profile; no deadline: the first example compiles CEL and is slow.
PROPERTIES = settings(deadline=None, max_examples=100)

RULES = [
    ("contract.kind != 'trial'", "not_in_trial"),
    ("has(context.ok) && context.ok == true", "not_ok"),
    ("contract.attributes.region != 'cn'", "region_not_supported"),  # errors without region
    ("now < contract.starts_at + duration('240h')", "too_late"),
]
GHOST = "ghost"  # a feature no catalog has


@dataclasses.dataclass(frozen=True)
class Case:
    catalog: Catalog
    closures: dict[str, frozenset[str]]  # oracle, from the DAG
    snapshot: Snapshot
    request: CheckRequest  # feature left to each property


@lru_cache(maxsize=512)
def _compiled(document: str) -> Catalog:
    return compile_dict(json.loads(document))


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(1, 7))
    graph: dict[str, list[str]] = {}
    for index in range(size):
        earlier = [f"f{j}" for j in range(index)]
        graph[f"f{index}"] = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        )
    return graph


def closures(graph: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    reach: dict[str, frozenset[str]] = {}
    for name in sorted(graph, key=lambda node: int(node[1:])):
        found: set[str] = set()
        for dependency in graph[name]:
            found |= {dependency} | reach[dependency]
        reach[name] = frozenset(found)
    return reach


def expected_entitled(snapshot: Snapshot, now: datetime) -> frozenset[str]:
    """The entitled set, written the slow obvious way."""
    entitled = set(snapshot.base_features)
    contract = snapshot.contract
    overrides = contract.feature_overrides if contract is not None else ()
    live = [o for o in overrides if o.expires_at is None or now < o.expires_at]
    entitled |= {o.feature for o in live if o.action == "grant"}
    entitled -= {o.feature for o in live if o.action == "revoke"}
    return frozenset(entitled)


expiries = st.one_of(
    st.none(),
    st.integers(-72, 72).map(lambda hours: NOW + timedelta(hours=hours)),
    st.just(NOW),
)


def overrides(names: list[str]) -> st.SearchStrategy[FeatureOverride]:
    return st.builds(
        FeatureOverride,
        feature=st.sampled_from(names),
        action=st.sampled_from(["grant", "revoke"]),
        expires_at=expiries,
        reason=st.just("sales"),
    )


@st.composite
def cases(draw: st.DrawFn) -> Case:
    graph = draw(dags())
    names = sorted(graph)
    features = st.lists(st.sampled_from(names), unique=True)
    plans = {
        plan: {"features": draw(features)} for plan in draw(st.sampled_from([["p"], ["p", "q"]]))
    }
    addons = {
        f"a{index}": {
            "features": draw(st.lists(st.sampled_from(names), unique=True, min_size=1)),
            "price": "1.00",
        }
        for index in range(draw(st.integers(0, 2)))
    }
    rules = [
        {"feature": draw(st.sampled_from(names)), "when": when, "reason": reason}
        for when, reason in draw(st.lists(st.sampled_from(RULES), max_size=3))
    ]
    document = {
        "currency": "USD",
        "features": {name: {"requires": graph[name]} for name in names},
        "plans": plans,
        "addons": addons,
        "rules": rules,
    }
    catalog = _compiled(json.dumps(document, sort_keys=True))

    plan = draw(st.sampled_from(sorted(plans)))
    chosen = draw(st.lists(st.sampled_from(sorted(addons)), unique=True)) if addons else []
    starts_at = NOW + timedelta(hours=draw(st.integers(-500, 24)))
    ends_at = draw(st.none() | st.integers(0, 1000).map(lambda h: starts_at + timedelta(hours=h)))
    region = draw(st.sampled_from([None, "eu", "cn"]))
    contract = ContractView(
        id="c-1",
        revision=1,
        plan=plan,
        kind=draw(st.sampled_from(["standard", "trial", "educational", "pilot"])),
        starts_at=starts_at,
        ends_at=ends_at,
        attributes={} if region is None else {"region": region},
        addons=frozenset(chosen),
        feature_overrides=tuple(draw(st.lists(overrides([*names, GHOST]), max_size=4))),
        limit_overrides=(),
        pinned=False,
        seats=None,
        instances=None,
    )
    base = set(catalog.plans[plan].features)
    for addon in chosen:
        base |= catalog.addons[addon].features
    snapshot = Snapshot(
        customer="acme",
        known=True,
        state_version=1,
        policy_version=1,
        catalog=catalog,
        contract=contract,
        plan=catalog.plans[plan],
        base_features=frozenset(base),
    )
    context: dict[str, Any] | None = draw(st.sampled_from([None, {}, {"ok": True}, {"ok": False}]))
    request = CheckRequest(customer="acme", feature="", subject="u-1", context=context)
    return Case(catalog=catalog, closures=closures(graph), snapshot=snapshot, request=request)


def with_overrides(snapshot: Snapshot, extra: tuple[FeatureOverride, ...], at: int) -> Snapshot:
    assert snapshot.contract is not None
    current = snapshot.contract.feature_overrides
    position = min(at, len(current))
    contract = dataclasses.replace(
        snapshot.contract, feature_overrides=current[:position] + extra + current[position:]
    )
    return dataclasses.replace(snapshot, contract=contract)


def ask(case: Case, feature: str, snapshot: Snapshot | None = None) -> Any:
    request = dataclasses.replace(case.request, feature=feature)
    return evaluate(snapshot or case.snapshot, request, NOW)


def in_term(contract: ContractView | None) -> bool:
    return (
        contract is not None
        and contract.starts_at <= NOW
        and (contract.ends_at is None or contract.ends_at > NOW)
    )


@PROPERTIES
@given(cases())
def test_allowed_only_when_the_feature_and_its_whole_closure_are_entitled(case: Case) -> None:
    entitled = expected_entitled(case.snapshot, NOW)
    assert entitled_features(case.snapshot, NOW) == entitled
    for name in case.catalog.features:
        verdict = ask(case, name)
        if verdict.allowed:
            assert name in entitled
            assert case.closures[name] <= entitled
        if verdict.reason == "dependency_missing":
            assert verdict.missing == tuple(sorted(case.closures[name] - entitled))
            assert name in entitled
        # And the converse, where nothing else can deny: entitled, in term, no rules.
        if (
            in_term(case.snapshot.contract)
            and name in entitled
            and case.closures[name] <= entitled
            and not case.catalog.rules_for(name)
        ):
            assert verdict.allowed


@PROPERTIES
@given(cases(), st.data())
def test_an_unexpired_revoke_always_denies(case: Case, data: st.DataObject) -> None:
    feature = data.draw(st.sampled_from(sorted(case.catalog.features)))
    expires = data.draw(
        st.none() | st.integers(1, 10**6).map(lambda s: NOW + timedelta(microseconds=s))
    )
    revoke = FeatureOverride(feature=feature, action="revoke", expires_at=expires, reason="r")
    revoked = with_overrides(case.snapshot, (revoke,), data.draw(st.integers(0, 4)))
    verdict = ask(case, feature, revoked)
    assert not verdict.allowed
    if in_term(revoked.contract):
        assert verdict.reason == "feature_not_in_plan"
    assert feature not in entitled_features(revoked, NOW)
    for name, closure in case.closures.items():
        if feature in closure:
            assert not ask(case, name, revoked).allowed


@PROPERTIES
@given(cases(), st.text(min_size=1, max_size=12))
def test_unknown_customers_and_features_are_always_denied(case: Case, name: str) -> None:
    unknown = dataclasses.replace(case.snapshot, known=False)
    for feature in [*case.catalog.features, name, GHOST]:
        verdict = ask(case, feature, unknown)
        assert (verdict.allowed, verdict.reason) == (False, "customer_unknown")
    if name not in case.catalog.features:
        verdict = ask(case, name)
        assert (verdict.allowed, verdict.reason) == (False, "feature_unknown")
        no_catalog = dataclasses.replace(case.snapshot, catalog=None)
        assert ask(case, name, no_catalog).reason == "feature_unknown"
    verdict = ask(case, GHOST)
    assert (verdict.allowed, verdict.reason) == (False, "feature_unknown")


@PROPERTIES
@given(cases())
def test_evaluate_is_deterministic_and_batch_agrees(case: Case) -> None:
    names = [*sorted(case.catalog.features), GHOST]
    first = [ask(case, name) for name in names]
    # An equal snapshot built anew: nothing may hang on the object's identity.
    assert case.snapshot.contract is not None
    copy = dataclasses.replace(case.snapshot, contract=dataclasses.replace(case.snapshot.contract))
    assert [ask(case, name) for name in names] == first
    assert [ask(case, name, copy) for name in names] == first
    assert evaluate_many(case.snapshot, names, case.request, NOW) == first
    assert evaluate_many(copy, list(reversed(names)), case.request, NOW) == first[::-1]
    # A batch naming features twice (clients' batches do) answers each as if alone.
    assert evaluate_many(case.snapshot, names + names[::-1], case.request, NOW) == (
        first + first[::-1]
    )


@PROPERTIES
@given(cases(), st.data())
def test_an_expired_override_has_no_effect(case: Case, data: st.DataObject) -> None:
    names = [*sorted(case.catalog.features), GHOST]
    expired = tuple(
        data.draw(
            st.lists(
                st.builds(
                    FeatureOverride,
                    feature=st.sampled_from(names),
                    action=st.sampled_from(["grant", "revoke"]),
                    expires_at=st.integers(0, 10**9).map(
                        lambda us: NOW - timedelta(microseconds=us)
                    ),
                    reason=st.just("lapsed"),
                ),
                min_size=1,
                max_size=3,
            )
        )
    )
    with_expired = with_overrides(case.snapshot, expired, data.draw(st.integers(0, 4)))
    assert entitled_features(with_expired, NOW) == entitled_features(case.snapshot, NOW)
    assert [ask(case, name, with_expired) for name in names] == [ask(case, name) for name in names]
