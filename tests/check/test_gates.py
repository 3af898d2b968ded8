"""The seat, instance and tenant gates, pure: holdings in, verdicts out."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from allotment.check.evaluator import OK, evaluate
from allotment.check.values import Holdings, InstanceHold, SessionHold, Snapshot
from allotment.contracts.limits import SeatLimits
from allotment.tenants.quotas import Quotas
from tests.check.snapshots import NOW, catalog, contract, request, snapshot

POLICY = """
currency: USD
features:
  reports: {}
  editor: {seat: required}
  viewer: {seat: required, guests: true}
  agent: {instance: required}
plans:
  team:
    features: [reports, editor, viewer, agent]
    seats: {limit: 3, guests: 2}
    instances: {limit: 4, kinds: {vm: 1, cluster: 4}, lease_ttl: 10m}
"""
MINUTE = timedelta(minutes=1)


def _snap(holdings: Holdings, *, concurrent: bool = False) -> Snapshot:
    policy = catalog(POLICY)
    view = contract(catalog_=policy)
    if concurrent:
        seats = SeatLimits(3, "concurrent", 0, 0, None, timedelta(minutes=30))
        view = dataclasses.replace(view, seats=seats)
    return dataclasses.replace(snapshot(catalog_=policy, contract_=view), holdings=holdings)


def _reason(snap: Snapshot, feature: str, **fields: object) -> str:
    verdict = evaluate(snap, request(feature, **fields), NOW)
    return "ok" if verdict is OK else verdict.reason


def test_seat_gate_members_guests_and_missing_subjects() -> None:
    snap = _snap(Holdings(members={"ann": None}, guests={"gus": None}))
    assert _reason(snap, "reports") == "ok"  # no seat needed
    assert _reason(snap, "editor") == "seat_required"
    assert _reason(snap, "editor", subject="ann") == "ok"
    assert _reason(snap, "editor", subject="bob") == "seat_required"
    assert _reason(snap, "viewer", subject="gus") == "ok"
    assert _reason(snap, "editor", subject="gus") == "guest_not_allowed"


def test_seat_gate_sessions_count_until_they_expire() -> None:
    held = Holdings(
        sessions=(SessionHold("ann", None, NOW + MINUTE),),
        session_expiry={"ann": NOW + MINUTE},
    )
    snap = _snap(held, concurrent=True)
    assert _reason(snap, "editor", subject="ann") == "ok"
    later = evaluate(snap, request("editor", subject="ann"), NOW + MINUTE)
    assert later.reason == "seat_required" and "no live session" in (later.detail or "")


def test_instance_gate_reasons() -> None:
    snap = _snap(
        Holdings(
            instances={
                "live": InstanceHold(1, None, NOW + MINUTE, ended=False),
                "lapsed": InstanceHold(1, None, NOW, ended=False),
                "reaped": InstanceHold(1, None, NOW - MINUTE, ended=True),
            }
        )
    )
    assert _reason(snap, "agent") == "instance_required"
    assert _reason(snap, "agent", instance="live") == "ok"
    assert _reason(snap, "agent", instance="lapsed") == "lease_expired"
    assert _reason(snap, "agent", instance="reaped") == "lease_expired"
    assert _reason(snap, "agent", instance="never") == "instance_unknown"


def test_tenant_gate_unknown_over_and_at_quota() -> None:
    snap = _snap(
        Holdings(
            members={"a": "eu", "b": "eu", "c": "us"},
            instances={"i": InstanceHold(4, "us", NOW + MINUTE, ended=False)},
            tenants={"eu": Quotas(seats=1), "us": Quotas(seats=1, instances=4)},
        )
    )
    assert _reason(snap, "reports", tenant="mars") == "tenant_unknown"
    over = evaluate(snap, request("editor", subject="a", tenant="eu"), NOW)
    assert over.reason == "tenant_quota_reached"
    assert over.limit == {"pool": "seats", "tenant": "eu", "limit": 1, "held": 2}
    assert _reason(snap, "reports", tenant="eu") == "ok"  # needs no pool
    assert _reason(snap, "editor", subject="c", tenant="us") == "ok"  # at its quota
    assert _reason(snap, "agent", instance="i", tenant="us") == "ok"
