"""Activation.check (prepared CEL context per snapshot) agrees with Rule.evaluate."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from allotment.check.activation import Activation
from allotment.policy.rules import Rule
from tests.check.snapshots import NOW, request, snapshot

SOURCES = [
    "contract.kind != 'trial'",
    "contract.attributes.region != 'cn'",
    "has(context.tags) && context.tags.exists(t, t == 'beta')",
    "now < timestamp('2027-01-01T00:00:00Z') && contract.kind == 'standard'",
    "customer.attributes.tier != 'blocked' && context.size() == 0",
    "subject == null && contract.plan == 'team'",
    "subject != null && subject.id.startsWith('u-') && contract.plan == 'team'",
    "contract.attributes.region",  # not a boolean: denies
    "contract.nope == 1",  # missing field: denies
    "unknown_name == 1 && contract.kind == 'standard'",  # unknown variable: denies
    "usage.size() == 0 && seats.size() == 0 && instances.size() == 0",
    "tenant == null || tenant.key == contract.id",
]


def _rule(source: str) -> Rule:
    return Rule.compile(feature="f", reason="r", source=source)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"subject": "u-1", "context": {"tags": ["beta"]}},
        {"subject": "x-1", "tenant": "c-1", "context": {"tags": "beta"}},
        {"context": {"bad": {1, 2}}},
    ],
)
@pytest.mark.parametrize("attributes", [{"region": "eu"}, {"region": "cn"}, {}])
def test_check_equals_evaluate(source: str, fields: dict, attributes: dict) -> None:
    snap = snapshot(attributes=attributes, customer_attributes={"tier": "gold"})
    rule = _rule(source)
    for now in (NOW, NOW + timedelta(days=400)):
        activation = Activation(snap, request("f", **fields), now)
        expected = rule.evaluate(Activation(snap, request("f", **fields), now).for_rule(rule))
        assert activation.check(rule) is expected
        assert activation.check(rule) is expected  # twice: the prepared context is reused


def test_request_values_do_not_leak_between_requests() -> None:
    snap = snapshot()
    rule = _rule("has(context.tags) && contract.kind == 'standard'")
    assert Activation(snap, request("f", context={"tags": ["a"]}), NOW).check(rule)
    assert not Activation(snap, request("f"), NOW).check(rule)
    interleaved = Activation(snap, request("f", context={"tags": ["a"]}), NOW)
    other = Activation(snap, request("f"), NOW)
    assert not other.check(rule)
    assert interleaved.check(rule)
    assert not other.check(rule)


def test_snapshots_do_not_share_prepared_variables() -> None:
    rule = _rule("contract.attributes.region != 'cn'")
    for _ in range(3):
        assert Activation(snapshot(attributes={"region": "eu"}), request("f"), NOW).check(rule)
        assert not Activation(snapshot(attributes={"region": "cn"}), request("f"), NOW).check(rule)


def test_threads_agree() -> None:
    snap = snapshot(attributes={"region": "eu"})
    rule = _rule("contract.attributes.region == 'eu' && now < timestamp('2027-01-01T00:00:00Z')")
    results: list[bool] = []

    def work(offset: int) -> None:
        now = NOW + timedelta(days=offset)
        for _ in range(200):
            results.append(Activation(snap, request("f"), now).check(rule) == (offset == 0))

    threads = [threading.Thread(target=work, args=(o,)) for o in (0, 400, 0, 400)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results) and len(results) == 800
