"""What a rule sees: every variable of docs/policy.md's table ("Rules and CEL"), hand-worked.

Each test builds a snapshot with its holdings, a request, and checks the verdict of a rule
that reads one variable; the values are worked out by hand from the holdings.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from allotment.check.activation import Activation
from allotment.check.evaluator import evaluate
from allotment.check.values import (
    CheckRequest,
    Holdings,
    InstanceHold,
    MeterTotals,
    SessionHold,
    Snapshot,
    Usage,
    Verdict,
)
from allotment.contracts.limits import SeatLimits
from allotment.policy.catalog import InstancePool
from allotment.tenants.quotas import Quotas
from tests.check.snapshots import NOW, catalog, request, snapshot

POLICY = """
currency: USD
features:
  owned: {}
  metered_rule: {}
  seat_rule: {}
  seat_kind: {}
  pool_rule: {}
  quota_rule: {}
  everything: {}
meters:
  api_calls: {event_type: api.call, aggregation: sum, property: count}
  exports: {event_type: export.created, aggregation: count}
plans:
  team:
    features: [owned, metered_rule, seat_rule, seat_kind, pool_rule, quota_rule, everything]
    limits:
      api_calls: {limit: 5000, period: day, enforcement: hard}
rules:
  - feature: owned
    when: "instance != null && instance.metadata.user == subject.id"
    reason: not_the_owner
  - feature: metered_rule
    when: "usage.api_calls < 1000"
    reason: too_many_calls
  - feature: seat_rule
    when: "seats.used < seats.limit"
    reason: seats_full
  - feature: seat_kind
    when: "subject != null && subject.seat == 'member'"
    reason: members_only
  - feature: pool_rule
    when: "instances.used + 4 <= instances.limit"
    reason: no_room_for_a_cluster
  - feature: quota_rule
    when: "tenant != null && has(tenant.quotas.seats) && tenant.quotas.seats >= 2"
    reason: tenant_too_small
"""

LEASE = NOW + timedelta(minutes=10)


def holdings(**fields: Any) -> Holdings:
    defaults: dict[str, Any] = {
        "members": {"alice": None, "bob": "eu"},
        "guests": {"gus": None},
        "instances": {
            "fp-alice": InstanceHold(
                1,
                None,
                LEASE,
                False,
                kind="vm",
                environment="production",
                metadata={"user": "alice"},
            ),  # fmt: skip
            "fp-old": InstanceHold(
                4,
                None,
                NOW - timedelta(minutes=1),
                True,
                kind="cluster",
                environment="staging",
                metadata={},
            ),  # fmt: skip
        },
        "tenants": {"eu": Quotas(seats=2), "us": Quotas()},
    }
    return Holdings(**{**defaults, **fields})


def world(**holding_fields: Any) -> Snapshot:
    base = snapshot(catalog_=catalog(POLICY))
    assert base.contract is not None
    contract = replace(
        base.contract,
        seats=SeatLimits(
            limit=3, model="named", guests=2, burst_extra=0, burst_window=None, session_ttl=None
        ),
        instances=InstancePool(
            limit=6, kinds={"vm": 1, "cluster": 4}, lease_ttl=timedelta(minutes=10)
        ),
    )
    return replace(base, contract=contract, holdings=holdings(**holding_fields))


def check(feature: str, snap: Snapshot | None = None, **fields: Any) -> Verdict:
    return evaluate(snap or world(), request(feature, **fields), NOW)


# -- instance.metadata against subject.id ---------------------------------------------------


def test_instance_metadata_user_matches_subject() -> None:
    assert check("owned", subject="alice", instance="fp-alice").allowed


def test_instance_metadata_user_of_another_subject_is_rule_denied() -> None:
    verdict = check("owned", subject="bob", instance="fp-alice")
    assert (verdict.allowed, verdict.reason, verdict.rule_reason) == (
        False,
        "rule_denied",
        "not_the_owner",
    )


def test_instance_variable_has_every_documented_field() -> None:
    req = request("owned", subject="alice", instance="fp-alice")
    found = Activation(world(), req, NOW).full()["instance"]
    assert found == {
        "fingerprint": "fp-alice",
        "kind": "vm",
        "environment": "production",
        "metadata": {"user": "alice"},
        "lease_expires_at": LEASE,
    }


# -- point 3: a missing instance reports its own reason --------------------------------------


def test_unknown_instance_read_by_a_rule_is_instance_unknown() -> None:
    verdict = check("owned", subject="alice", instance="fp-nobody")
    assert (verdict.allowed, verdict.reason) == (False, "instance_unknown")
    assert verdict.rule_reason is None


def test_lapsed_instance_read_by_a_rule_is_lease_expired() -> None:
    verdict = check("owned", subject="alice", instance="fp-old")
    assert (verdict.allowed, verdict.reason) == (False, "lease_expired")


def test_lease_lapsing_after_load_is_lease_expired() -> None:
    verdict = evaluate(world(), request("owned", subject="alice", instance="fp-alice"), LEASE)
    assert (verdict.allowed, verdict.reason) == (False, "lease_expired")


def test_unknown_instance_without_a_rule_reading_instance_is_not_checked() -> None:
    # `metered_rule` reads only usage: naming a stranger instance changes nothing
    assert check("metered_rule", instance="fp-nobody").allowed


# -- usage -----------------------------------------------------------------------------------


def usage(api_calls_day: int) -> Usage:
    totals = MeterTotals(hour=Decimal(1), day=Decimal(api_calls_day), month=Decimal(99_999))
    return Usage(as_of=NOW, meters={"api_calls": totals}, tenants={})


def test_usage_rule_reads_the_meter_in_its_limit_period() -> None:
    # the plan limits api_calls per day: the rule sees the day's 999, not the month's 99999
    assert check("metered_rule", usage=usage(999)).allowed
    denied = check("metered_rule", usage=usage(1000))
    assert (denied.reason, denied.rule_reason) == ("rule_denied", "too_many_calls")


def test_usage_variable_names_every_meter_of_the_policy() -> None:
    found = Activation(world(), request("metered_rule", usage=usage(7)), NOW).full()["usage"]
    assert found == {"api_calls": 7, "exports": 0}  # exports: no limit, month, nothing used


def test_usage_unread_counts_as_nothing_used_like_the_meter_gate() -> None:
    assert Activation(world(), request("metered_rule"), NOW).full()["usage"] == {
        "api_calls": 0,
        "exports": 0,
    }


# -- seats, subject.seat ---------------------------------------------------------------------


def test_seats_rule_compares_used_with_limit() -> None:
    # members alice and bob: 2 of 3
    assert check("seat_rule").allowed
    full = world(members={"alice": None, "bob": "eu", "carol": None})
    verdict = check("seat_rule", full)
    assert (verdict.reason, verdict.rule_reason) == ("rule_denied", "seats_full")


def test_seats_variable() -> None:
    found = Activation(world(), request("seat_rule"), NOW).full()["seats"]
    assert found == {"limit": 3, "used": 2, "guests": 2, "guests_used": 1}


def test_concurrent_seats_count_live_sessions() -> None:
    snap = world(
        members={},
        sessions=(
            SessionHold("ann", None, NOW + timedelta(minutes=5)),
            SessionHold("ben", None, NOW - timedelta(minutes=5)),  # ended before `now`
        ),
        session_expiry={"ann": NOW + timedelta(minutes=5), "ben": NOW - timedelta(minutes=5)},
    )
    assert snap.contract is not None and snap.contract.seats is not None
    snap = replace(
        snap,
        contract=replace(snap.contract, seats=replace(snap.contract.seats, model="concurrent")),
    )
    activation = Activation(snap, request("seat_kind", subject="ann"), NOW).full()
    assert activation["seats"]["used"] == 1
    assert activation["subject"] == {"id": "ann", "seat": "member"}
    ben = Activation(snap, request("seat_kind", subject="ben"), NOW).full()
    assert ben["subject"] == {"id": "ben", "seat": None}


def test_subject_seat_member_guest_or_null() -> None:
    assert check("seat_kind", subject="alice").allowed
    guest = check("seat_kind", subject="gus")
    assert (guest.reason, guest.rule_reason) == ("rule_denied", "members_only")
    # a subject without a seat: `seat` is null, the rule evaluates (no crash, no seat_required)
    nobody = check("seat_kind", subject="nobody")
    assert (nobody.reason, nobody.rule_reason) == ("rule_denied", "members_only")
    found = Activation(world(), request("seat_kind", subject="nobody"), NOW).full()["subject"]
    assert found == {"id": "nobody", "seat": None}


def test_no_seat_pool_reads_as_zero_seats() -> None:
    snap = world()
    assert snap.contract is not None
    bare = replace(snap, contract=replace(snap.contract, seats=None, instances=None))
    found = Activation(bare, request("seat_rule"), NOW).full()
    assert found["seats"] == {"limit": 0, "used": 2, "guests": 0, "guests_used": 1}
    assert found["instances"] == {"limit": 0, "used": 1}


# -- instances -------------------------------------------------------------------------------


def test_instances_rule_reads_live_weight() -> None:
    # live: fp-alice (weight 1); fp-old lapsed. 1 + 4 <= 6; then one of weight 3: 3 + 4 > 6
    assert check("pool_rule").allowed
    heavier = world(
        instances={
            "fp-a": InstanceHold(3, None, LEASE, False, kind="vm", environment="", metadata={}),
        }
    )
    verdict = check("pool_rule", heavier)
    assert (verdict.reason, verdict.rule_reason) == ("rule_denied", "no_room_for_a_cluster")
    assert Activation(heavier, request("pool_rule"), NOW).full()["instances"] == {
        "limit": 6,
        "used": 3,
    }


# -- tenant.quotas ---------------------------------------------------------------------------


def test_tenant_quotas_rule() -> None:
    assert check("quota_rule", tenant="eu").allowed
    verdict = check("quota_rule", tenant="us")  # no seat quota
    assert (verdict.reason, verdict.rule_reason) == ("rule_denied", "tenant_too_small")
    found = Activation(world(), request("quota_rule", tenant="eu"), NOW).full()["tenant"]
    assert found == {"key": "eu", "quotas": {"seats": 2}}


def test_unknown_tenant_read_by_a_rule_is_tenant_unknown() -> None:
    verdict = check("quota_rule", tenant="mars")
    assert (verdict.allowed, verdict.reason) == (False, "tenant_unknown")


# -- the rest of the table -------------------------------------------------------------------


def test_customer_variable_has_its_name() -> None:
    snap = replace(world(), customer_name="Acme Inc.")
    found = Activation(snap, request("owned"), NOW).full()["customer"]
    assert found == {"key": "acme", "name": "Acme Inc.", "attributes": {}}


def test_request_usage_keeps_its_default() -> None:
    assert CheckRequest(customer="a", feature="b").usage is None
