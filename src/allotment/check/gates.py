"""The evaluator's gates (step 8): seats, instances and tenants, from the snapshot's holdings.

    gate       runs when                           denies with
    seat       the feature has `seat: required`    seat_required (no subject, or the subject
                                                   holds no seat / live session),
                                                   guest_not_allowed (a guest seat, and the
                                                   feature is not `guests: true`)
    instance   the feature has `instance: required` instance_required (no instance named),
                                                   instance_unknown (never registered, or
                                                   deregistered), lease_expired (lapsed)
    tenant     the request names a tenant          tenant_unknown (not a tenant of the
                                                   customer), tenant_quota_reached (the
                                                   tenant holds more of the pool the feature
                                                   needs than its quota: after a quota was
                                                   lowered; at the quota is fine)

Pure like the evaluator: `now` is the caller's. A feature that needs neither a seat nor an
instance, checked without a tenant, costs three attribute reads here.
"""

from __future__ import annotations

from datetime import datetime

from allotment.check.model import CheckRequest, Snapshot, Verdict
from allotment.policy.catalog import Feature

_NO_SUBJECT = "needs a subject holding a seat: pass `subject`"
_NO_INSTANCE = "needs a registered instance: pass `instance` (its fingerprint)"


def seat(
    snapshot: Snapshot, request: CheckRequest, feature: Feature, now: datetime
) -> Verdict | None:
    if not feature.seat_required:
        return None
    subject = request.subject
    if subject is None:
        return Verdict(False, "seat_required", detail=f"'{feature.name}' {_NO_SUBJECT}")
    holdings = snapshot.holdings
    if subject in holdings.members:
        return None
    if subject in holdings.guests:
        if feature.guests:
            return None
        return Verdict(
            False,
            "guest_not_allowed",
            detail=f"'{subject}' holds a guest seat; '{feature.name}' is not open to guests",
        )
    expiry = holdings.session_expiry.get(subject)
    if expiry is not None and now < expiry:
        return None
    concurrent = snapshot.contract is not None and (
        snapshot.contract.seats is not None and snapshot.contract.seats.model == "concurrent"
    )
    held = "no live session" if concurrent else "no seat"
    return Verdict(
        False, "seat_required", detail=f"'{subject}' holds {held}; '{feature.name}' needs one"
    )


def instance(
    snapshot: Snapshot, request: CheckRequest, feature: Feature, now: datetime
) -> Verdict | None:
    if not feature.instance_required:
        return None
    fingerprint = request.instance
    if fingerprint is None:
        return Verdict(False, "instance_required", detail=f"'{feature.name}' {_NO_INSTANCE}")
    hold = snapshot.holdings.instances.get(fingerprint)
    if hold is None:
        return Verdict(
            False, "instance_unknown", detail=f"no live instance with fingerprint '{fingerprint}'"
        )
    if hold.ended or now >= hold.lease_expires_at:
        return Verdict(
            False,
            "lease_expired",
            detail=f"the lease of instance '{fingerprint}' lapsed; register it again",
        )
    return None


def tenant(
    snapshot: Snapshot, request: CheckRequest, feature: Feature, now: datetime
) -> Verdict | None:
    key = request.tenant
    if key is None:
        return None
    quotas = snapshot.holdings.tenants.get(key)
    if quotas is None:
        return Verdict(False, "tenant_unknown", detail=f"no tenant '{key}' for this customer")
    holdings = snapshot.holdings
    if feature.seat_required and quotas.seats is not None:
        seats = snapshot.contract.seats if snapshot.contract is not None else None
        if seats is not None and seats.model == "concurrent":
            held = holdings.live_sessions(now, key)
        else:
            held = sum(1 for t in holdings.members.values() if t == key)
        if held > quotas.seats:
            return _over(key, "seats", held, quotas.seats)
    if feature.instance_required and quotas.instances is not None:
        _, weight = holdings.instance_weight(now, key)
        if weight > quotas.instances:
            return _over(key, "instances", weight, quotas.instances)
    return None


def _over(tenant: str, pool: str, held: int, quota: int) -> Verdict:
    return Verdict(
        False,
        "tenant_quota_reached",
        detail=f"tenant '{tenant}' holds {held} {pool}, over its quota of {quota}",
        limit={"pool": pool, "tenant": tenant, "limit": quota, "held": held},
    )
