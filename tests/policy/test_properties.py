"""Hypothesis properties of the policy core: determinism, closures, cycles, digests."""

from __future__ import annotations

import json
import random
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.policy import canonical_form, compile_policy, digest, load, validate
from allotment.policy.graph import find_cycles

# Per test, not a global profile, so other suites keep their own settings. No deadline:
# a cold first example (imports, CEL) is slower than the rest and is not a failure.
GRAPHS = settings(deadline=None, max_examples=100)
DOCUMENTS = settings(deadline=None, max_examples=50)

Graph = dict[str, list[str]]
SafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@st.composite
def dags(draw: st.DrawFn, *, min_size: int = 1, max_size: int = 12) -> Graph:
    """Features f0..fn; fi may require only fj with j < i, so there is never a cycle."""
    size = draw(st.integers(min_size, max_size))
    graph: Graph = {}
    for index in range(size):
        earlier = [f"f{j}" for j in range(index)]
        graph[f"f{index}"] = (
            draw(st.lists(st.sampled_from(earlier), unique=True)) if earlier else []
        )
    return graph


def reachable(graph: Graph) -> dict[str, set[str]]:
    """Transitive closures by the DAG's index order: an oracle independent of graph.closure."""
    reach: dict[str, set[str]] = {}
    for name in sorted(graph, key=lambda node: int(node[1:])):
        reach[name] = set()
        for dependency in graph[name]:
            reach[name] |= {dependency} | reach[dependency]
    return reach


def feature_document(graph: Graph) -> dict[str, Any]:
    return {
        "currency": "USD",
        "features": {name: {"requires": deps} for name, deps in graph.items()},
    }


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, set[str]]]:
    """A valid document with dependencies, meters, an inheritance forest and rules, and the
    feature set each plan must resolve to."""
    graph = draw(dags())
    names = sorted(graph)
    meters = {
        f"m{i}": (
            {"event_type": f"e{i}", "aggregation": "count"}
            if draw(st.booleans())
            else {"event_type": f"e{i}", "aggregation": "sum", "property": "n"}
        )
        for i in range(draw(st.integers(1, 3)))
    }
    features: dict[str, Any] = {}
    for name in names:
        spec: dict[str, Any] = {"requires": graph[name]}
        if draw(st.booleans()):
            spec["meter"] = draw(st.sampled_from(sorted(meters)))
        if draw(st.booleans()):
            spec["seat"] = "required"
            spec["guests"] = draw(st.booleans())
        features[name] = spec

    plans: dict[str, Any] = {}
    expected: dict[str, set[str]] = {}
    for index in range(draw(st.integers(1, 5))):
        name = f"p{index}"
        parent = draw(st.none() | st.sampled_from(sorted(plans))) if plans else None
        if parent is None:
            chosen = draw(st.lists(st.sampled_from(names), unique=True))
            plan: dict[str, Any] = {
                "features": chosen,
                "seats": {
                    "limit": draw(st.integers(0, 500)),
                    "burst": {"extra": 2, "window": "72h"},
                },
                "price": {"base": f"{draw(st.integers(0, 10_000))}.{draw(st.integers(10, 99))}"},
            }
            expected[name] = set(chosen)
        else:
            adds = draw(st.lists(st.sampled_from(names), unique=True))
            removable = sorted(expected[parent] - set(adds))
            removes = draw(st.lists(st.sampled_from(removable), unique=True)) if removable else []
            plan = {
                "extends": parent,
                "features": [f"+{a}" for a in adds] + [f"-{r}" for r in removes],
                "seats": {"limit": draw(st.integers(0, 500))},
            }
            expected[name] = (expected[parent] | set(adds)) - set(removes)
        limits = draw(st.lists(st.sampled_from(sorted(meters)), unique=True))
        plan["limits"] = {meter: {"limit": draw(st.integers(0, 10**6))} for meter in limits}
        plans[name] = plan

    rules = [
        {"feature": draw(st.sampled_from(names)), "when": when, "reason": "rule_denied"}
        for when in draw(
            st.lists(
                st.sampled_from(
                    [
                        "contract.attributes.region != 'cn'",
                        "usage.exists(m, m > 10)",
                        "now < timestamp('2100-01-01T00:00:00Z')",
                    ]
                ),
                max_size=3,
            )
        )
    ]
    raw = {
        "currency": "USD",
        "features": features,
        "meters": meters,
        "plans": plans,
        "rules": rules,
    }
    return raw, expected


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: shuffled(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [shuffled(item, rng) for item in value]
    return value


@DOCUMENTS
@given(documents())
def test_compiling_the_same_document_twice_gives_equal_catalogs(
    case: tuple[dict[str, Any], dict[str, set[str]]],
) -> None:
    raw, _ = case
    first, second = validate(raw), validate(raw)
    assert first.errors == [] and first.document is not None and second.document is not None
    assert first.document == second.document
    assert compile_policy(first.document) == compile_policy(second.document)


@DOCUMENTS
@given(documents())
def test_plans_resolve_to_the_features_their_inheritance_implies(
    case: tuple[dict[str, Any], dict[str, set[str]]],
) -> None:
    raw, expected = case
    document = validate(raw).document
    assert document is not None
    catalog = compile_policy(document)
    assert {name: set(plan.features) for name, plan in catalog.plans.items()} == expected


@GRAPHS
@given(dags())
def test_closure_contains_every_transitive_dependency(graph: Graph) -> None:
    document = validate(feature_document(graph)).document
    assert document is not None
    features = compile_policy(document).features
    oracle = reachable(graph)
    for name, feature in features.items():
        assert feature.closure == oracle[name]
        assert name not in feature.closure
        for dependency in graph[name]:
            assert dependency in feature.closure
            assert features[dependency].closure <= feature.closure


@GRAPHS
@given(dags(), st.data())
def test_an_injected_dependency_cycle_is_always_reported(graph: Graph, data: st.DataObject) -> None:
    order = data.draw(st.permutations(sorted(graph)))
    loop = order[: data.draw(st.integers(1, len(order)))]
    for here, there in zip(loop, [*loop[1:], loop[0]], strict=True):
        if there not in graph[here]:
            graph[here].append(there)
    result = validate(feature_document(graph))
    assert result.document is None
    cycles = [e for e in result.errors if e["message"].startswith("dependency cycle: ")]
    assert cycles, result.errors
    for error in cycles:
        nodes = error["message"].removeprefix("dependency cycle: ").split(" -> ")
        assert error["path"] == f"features.{nodes[0]}.requires"
        assert nodes[0] == nodes[-1]
        for here, there in zip(nodes, nodes[1:], strict=False):
            assert there in graph[here], f"{here} -> {there} is not an edge"


@GRAPHS
@given(dags())
def test_an_acyclic_graph_reports_no_cycle(graph: Graph) -> None:
    assert find_cycles(graph) == []
    assert validate(feature_document(graph)).errors == []


@GRAPHS
@given(st.integers(1, 8), st.data())
def test_an_injected_inheritance_cycle_is_always_reported(size: int, data: st.DataObject) -> None:
    plans: dict[str, Any] = {"p0": {"features": []}}
    for index in range(1, size + 1):
        plans[f"p{index}"] = {"extends": f"p{data.draw(st.integers(0, index - 1))}"}
    loop = data.draw(st.permutations(sorted(plans)))[: data.draw(st.integers(1, len(plans)))]
    for here, there in zip(loop, [*loop[1:], loop[0]], strict=True):
        plans[here]["extends"] = there
    errors = validate({"currency": "USD", "plans": plans}).errors
    cycles = [e for e in errors if e["message"].startswith("inheritance cycle: ")]
    assert cycles, errors
    nodes = cycles[0]["message"].removeprefix("inheritance cycle: ").split(" -> ")
    for here, there in zip(nodes, nodes[1:], strict=False):
        assert plans[here]["extends"] == there


@DOCUMENTS
@given(documents(), st.randoms(use_true_random=False))
def test_digest_is_invariant_under_key_order_and_format(
    case: tuple[dict[str, Any], dict[str, set[str]]], rng: random.Random
) -> None:
    raw, _ = case
    original = validate(raw).document
    reordered = validate(shuffled(raw, rng)).document
    as_yaml = load(yaml.dump(shuffled(raw, rng), Dumper=SafeDumper), "application/yaml").document
    as_json = load(json.dumps(shuffled(raw, rng)), "application/json").document
    assert original is not None and reordered is not None
    assert as_yaml is not None and as_json is not None
    assert digest(original) == digest(reordered) == digest(as_yaml) == digest(as_json)


@DOCUMENTS
@given(documents())
def test_the_canonical_form_validates_back_to_the_same_document(
    case: tuple[dict[str, Any], dict[str, set[str]]],
) -> None:
    raw, _ = case
    document = validate(raw).document
    assert document is not None
    again = validate(canonical_form(document)).document
    assert again == document
    assert digest(again) == digest(document)
