"""The check evaluator, one reason code at a time, then the order between them."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from allotment.check.activation import Activation
from allotment.check.evaluator import OK, Gate, entitled_features, evaluate, evaluate_many
from allotment.check.values import CheckRequest, Holdings, InstanceHold, Snapshot, Verdict
from allotment.policy.catalog import Feature
from allotment.policy.rules import RULE_VARIABLES
from allotment.tenants.quotas import Quotas
from tests.check.snapshots import (
    HOUR,
    NOW,
    START,
    catalog,
    contract,
    grant,
    request,
    revoke,
    snapshot,
)


def check(
    feature: str, *, at: datetime = NOW, req: CheckRequest | None = None, **snapshot_fields: Any
) -> Verdict:
    """Evaluate `feature` (or `req`) on `snapshot(**snapshot_fields)` at `at`."""
    return evaluate(snapshot(**snapshot_fields), req or request(feature), at)


# -- one test per reason code ---------------------------------------------------------------


def test_plan_feature_is_allowed_with_ok() -> None:
    verdict = check("reports")
    assert verdict == Verdict(allowed=True, reason="ok")
    assert verdict is OK


def test_unknown_customer_is_denied() -> None:
    verdict = check("reports", known=False, customer="ghost")
    assert (verdict.allowed, verdict.reason) == (False, "customer_unknown")
    assert verdict.detail is not None and "ghost" in verdict.detail


def test_feature_missing_from_catalog_is_unknown() -> None:
    verdict = check("teleport")
    assert (verdict.allowed, verdict.reason) == (False, "feature_unknown")
    assert verdict.detail is not None and "teleport" in verdict.detail


def test_without_catalog_every_feature_is_unknown() -> None:
    verdict = check("reports", catalog_=None)
    assert (verdict.allowed, verdict.reason) == (False, "feature_unknown")


def test_customer_without_contract_has_no_active_contract() -> None:
    verdict = check("reports", contract_=None)
    assert (verdict.allowed, verdict.reason) == (False, "no_active_contract")


def test_contract_starting_later_is_not_started() -> None:
    verdict = check("reports", starts_at=NOW + HOUR)
    assert (verdict.allowed, verdict.reason) == (False, "contract_not_started")


def test_contract_starts_at_its_first_instant() -> None:
    assert check("reports", starts_at=NOW).allowed


def test_ended_contract_is_expired() -> None:
    verdict = check("reports", ends_at=NOW - HOUR)
    assert (verdict.allowed, verdict.reason) == (False, "contract_expired")


def test_contract_end_is_exclusive() -> None:
    assert check("reports", ends_at=NOW).reason == "contract_expired"
    assert check("reports", ends_at=NOW + timedelta(microseconds=1)).allowed


@pytest.mark.parametrize("kind", ["standard", "educational", "pilot"])
def test_only_a_trial_expires_as_a_trial(kind: str) -> None:
    assert check("reports", kind=kind, ends_at=NOW).reason == "contract_expired"


def test_ended_trial_is_trial_expired() -> None:
    verdict = check("reports", kind="trial", ends_at=NOW - HOUR)
    assert (verdict.allowed, verdict.reason) == (False, "trial_expired")


def test_feature_outside_plan_is_not_in_plan() -> None:
    verdict = check("audit_log")
    assert (verdict.allowed, verdict.reason) == (False, "feature_not_in_plan")
    assert verdict.detail is not None and "team" in verdict.detail


def test_addon_entitles_its_features() -> None:
    assert check("audit_log", addons=["audit_pack"]).allowed
    assert check("priority_support", addons=["priority_support"]).allowed
    assert check("priority_support", addons=["audit_pack"]).reason == "feature_not_in_plan"


def test_grant_override_entitles_a_feature_outside_the_plan() -> None:
    assert check("audit_log", overrides=[grant("audit_log")]).allowed
    assert check("audit_log", overrides=[grant("audit_log", expires_at=NOW + HOUR)]).allowed


def test_revoke_override_removes_a_plan_feature() -> None:
    verdict = check("reports", overrides=[revoke("reports")])
    assert (verdict.allowed, verdict.reason) == (False, "feature_not_in_plan")
    assert verdict.detail is not None and "abuse review" in verdict.detail


def test_revoke_wins_over_addon_and_grant() -> None:
    verdict = check(
        "audit_log",
        addons=["audit_pack"],
        overrides=[grant("audit_log"), revoke("audit_log"), grant("audit_log")],
    )
    assert verdict.reason == "feature_not_in_plan"


def test_expired_grant_no_longer_entitles() -> None:
    assert check("audit_log", overrides=[grant("audit_log", expires_at=NOW)]).reason == (
        "feature_not_in_plan"
    )
    assert check("audit_log", overrides=[grant("audit_log", expires_at=NOW - HOUR)]).reason == (
        "feature_not_in_plan"
    )


def test_expired_revoke_no_longer_removes() -> None:
    assert check("reports", overrides=[revoke("reports", expires_at=NOW)]).allowed
    assert not check("reports", overrides=[revoke("reports", expires_at=NOW + HOUR)]).allowed


def test_missing_dependency_is_named() -> None:
    verdict = check("sso", plan="sso_only", attributes={"region": "eu"})
    assert (verdict.allowed, verdict.reason) == (False, "dependency_missing")
    assert verdict.missing == ("audit_log",)
    assert verdict.detail is not None and "audit_log" in verdict.detail


def test_every_missing_transitive_dependency_is_named_sorted() -> None:
    verdict = check("scim", overrides=[grant("scim")], attributes={"region": "eu"})
    assert verdict.reason == "dependency_missing"
    assert verdict.missing == ("audit_log", "sso")
    assert verdict.detail is not None and "'audit_log', 'sso'" in verdict.detail


def test_dependency_supplied_by_addon_or_grant_is_satisfied() -> None:
    eu = {"region": "eu"}
    assert check("sso", plan="sso_only", attributes=eu, addons=["audit_pack"]).allowed
    assert check("sso", plan="sso_only", attributes=eu, overrides=[grant("audit_log")]).allowed


def test_revoked_dependency_is_missing() -> None:
    verdict = check(
        "scim", plan="enterprise", attributes={"region": "eu"}, overrides=[revoke("audit_log")]
    )
    assert (verdict.reason, verdict.missing) == ("dependency_missing", ("audit_log",))


def test_rule_on_contract_region_denies_with_its_reason() -> None:
    verdict = check("sso", plan="enterprise", attributes={"region": "cn"})
    assert (verdict.allowed, verdict.reason) == (False, "rule_denied")
    assert verdict.rule_reason == "region_not_supported"
    assert check("sso", plan="enterprise", attributes={"region": "eu"}).allowed


def test_rule_that_cannot_be_evaluated_denies() -> None:
    # No `region` attribute at all: the rule reads a key that is not there.
    verdict = check("sso", plan="enterprise")
    assert (verdict.reason, verdict.rule_reason) == ("rule_denied", "region_not_supported")


def test_rule_on_request_context() -> None:
    beta = request("beta", context={"tags": ["early", "beta"]})
    assert check("beta", req=beta).allowed
    verdict = check("beta", req=request("beta", context={"tags": ["early"]}))
    assert (verdict.reason, verdict.rule_reason) == ("rule_denied", "not_in_beta")
    assert check("beta").rule_reason == "not_in_beta"  # no context at all


def test_rule_on_contract_kind() -> None:
    assert check("exports").allowed
    assert check("exports", kind="trial").rule_reason == "not_in_trial"


def test_rule_on_now() -> None:
    assert check("sunset").allowed
    late = datetime(2027, 1, 1, tzinfo=NOW.tzinfo)
    assert check("sunset", at=late, starts_at=START).rule_reason == "sunset_passed"


def test_rule_on_subject() -> None:
    assert check("personal", req=request("personal", subject="u-42")).allowed
    assert check("personal", req=request("personal", subject="svc-1")).rule_reason == "needs_user"
    assert check("personal").rule_reason == "needs_user"


def test_first_failing_rule_in_document_order_names_the_reason() -> None:
    blocked = {"tier": "blocked"}
    assert check("guarded", customer_attributes=blocked).rule_reason == "customer_blocked"
    gold = {"tier": "gold"}
    assert check("guarded", customer_attributes=gold).rule_reason == "enterprise_only"
    assert check("guarded", plan="enterprise", customer_attributes={"tier": "gold"}).allowed


def test_activation_provides_every_rule_variable() -> None:
    req = request("beta", subject="u-1", instance="fp-1", tenant="eu", context={"a": 1})
    activation = Activation(snapshot(addons=["audit_pack"]), req, NOW).full()
    assert set(activation) == set(RULE_VARIABLES)
    assert activation["contract"]["addons"] == ["audit_pack"]
    assert activation["contract"]["attributes"]["edition"] == "team"
    assert activation["customer"] == {"key": "acme", "name": None, "attributes": {}}
    # the snapshot holds no seat, instance or tenant: each reads as held by no one
    assert activation["subject"] == {"id": "u-1", "seat": None}
    assert activation["instance"] == {
        "fingerprint": "fp-1",
        "kind": None,
        "environment": None,
        "metadata": None,
        "lease_expires_at": None,
    }
    assert activation["tenant"] == {"key": "eu", "quotas": None}
    assert activation["usage"] == {}  # the test catalog has no meters
    assert activation["seats"] == {"limit": 0, "used": 0, "guests": 0, "guests_used": 0}
    assert activation["instances"] == {"limit": 0, "used": 0}
    assert activation["now"] == NOW
    assert activation["context"] == {"a": 1}
    bare = Activation(snapshot(), request("beta"), NOW).full()
    assert (bare["subject"], bare["instance"], bare["tenant"], bare["context"]) == (
        None,
        None,
        None,
        {},
    )


@pytest.mark.parametrize(
    "source",
    [
        "contract.id == 'c-1' && contract.plan == 'team' && contract.revision == 1",
        "'audit_pack' in contract.addons && contract.ends_at == null",
        "now - contract.starts_at > duration('24h')",
        "now > timestamp('2020-01-01T00:00:00Z')",
        "customer.key == 'acme' && customer.attributes.tier == 'gold'",
        "subject.id == 'u-1' && instance.fingerprint == 'fp' && tenant.key == 't'",
        "size(usage) == 0 && seats.used == 0 && instances.used == 1",
        "subject.seat == null && instance.kind == 'vm' && instance.metadata.user == 'u-1'",
        "tenant.quotas.seats == 2 && customer.name == 'Acme'",
        "context['k'] == [1, 2] && context.nested.deep == true",
        "contract.addons.map(a, a + '!') == ['audit_pack!']",
        "[contract.kind, customer.key].exists(x, x == 'acme')",
    ],
)
def test_rule_can_read_each_variable(source: str) -> None:
    escaped = source.replace('"', '\\"')
    text = f"""
currency: USD
features: {{probe: {{}}}}
plans: {{team: {{features: [probe]}}}}
addons: {{audit_pack: {{features: [probe], price: "1.00"}}}}
rules: [{{feature: probe, when: "{escaped}", reason: probe_failed}}]
"""
    policy = catalog(text)
    req = request(
        "probe",
        subject="u-1",
        instance="fp",
        tenant="t",
        context={"k": [1, 2], "nested": {"deep": True}},
    )
    snap = replace(
        snapshot(
            catalog_=policy,
            contract_=contract(catalog_=policy, addons=["audit_pack"]),
            customer_attributes={"tier": "gold"},
        ),
        customer_name="Acme",
        holdings=Holdings(
            instances={
                "fp": InstanceHold(
                    1, None, NOW + HOUR, False, kind="vm", environment="", metadata={"user": "u-1"}
                )
            },
            tenants={"t": Quotas(seats=2)},
        ),
    )
    assert evaluate(snap, req, NOW, gates=()) is OK


# -- order of precedence --------------------------------------------------------------------


def test_unknown_customer_beats_unknown_feature() -> None:
    assert check("teleport", known=False).reason == "customer_unknown"


def test_unknown_feature_beats_missing_contract() -> None:
    assert check("teleport", contract_=None).reason == "feature_unknown"
    assert check("teleport", ends_at=NOW - HOUR).reason == "feature_unknown"


def test_contract_term_beats_entitlement() -> None:
    assert check("audit_log", ends_at=NOW - HOUR).reason == "contract_expired"
    assert check("audit_log", starts_at=NOW + HOUR).reason == "contract_not_started"
    assert check("audit_log", kind="trial", ends_at=NOW).reason == "trial_expired"


def test_entitlement_beats_dependencies_and_rules() -> None:
    # `scim` would also miss its dependencies and fail its region rule via sso: not reached.
    assert check("scim", attributes={"region": "cn"}).reason == "feature_not_in_plan"
    assert check("sso", attributes={"region": "cn"}).reason == "feature_not_in_plan"


def test_dependencies_beat_rules() -> None:
    verdict = check("sso", plan="sso_only", attributes={"region": "cn"})
    assert verdict.reason == "dependency_missing"
    assert verdict.rule_reason is None


def test_rules_beat_gates() -> None:
    calls: list[str] = []

    def gate(snap: Snapshot, req: CheckRequest, feature: Feature, now: datetime) -> Verdict:
        calls.append(feature.name)
        return Verdict(allowed=False, reason="seat_required")

    snap = snapshot(kind="trial")
    assert evaluate(snap, request("exports"), NOW, gates=[gate]).reason == "rule_denied"
    assert calls == []
    assert evaluate(snap, request("reports"), NOW, gates=[gate]).reason == "seat_required"
    assert calls == ["reports"]


# -- gates: the seam for seats, instances and meters ----------------------------------------


def test_shipped_gates_are_seat_instance_tenant_meter_credits_in_order() -> None:
    from allotment.check import credits, evaluator, gates

    shipped = (gates.seat, gates.instance, gates.tenant, gates.meter, credits.credits)
    assert shipped == evaluator.GATES


def test_gate_sees_the_check_and_can_deny() -> None:
    seen: list[tuple[str, str | None, str, datetime]] = []

    def seat_gate(
        snap: Snapshot, req: CheckRequest, feature: Feature, now: datetime
    ) -> Verdict | None:
        seen.append((snap.customer, req.subject, feature.name, now))
        if feature.seat_required and req.subject is None:
            return Verdict(allowed=False, reason="seat_required", detail="no subject")
        return None

    snap = snapshot()
    assert evaluate(snap, request("reports"), NOW, gates=[seat_gate]) is OK
    denied = evaluate(snap, request("editor"), NOW, gates=[seat_gate])
    assert (denied.allowed, denied.reason) == (False, "seat_required")
    assert evaluate(snap, request("editor", subject="u-1"), NOW, gates=[seat_gate]) is OK
    assert seen == [
        ("acme", None, "reports", NOW),
        ("acme", None, "editor", NOW),
        ("acme", "u-1", "editor", NOW),
    ]


def test_first_denying_gate_decides_and_later_gates_do_not_run() -> None:
    ran: list[str] = []

    def named(reason: str, allowed: bool) -> Gate:
        def gate(snap: Snapshot, req: CheckRequest, feature: Feature, now: datetime) -> Verdict:
            ran.append(reason)
            return Verdict(allowed=allowed, reason=reason)

        return gate

    gates = [named("instance_required", False), named("usage_limit_reached", False)]
    verdict = evaluate(snapshot(), request("reports"), NOW, gates=gates)
    assert verdict.reason == "instance_required"
    assert ran == ["instance_required"]


def test_allowing_gates_carry_warnings_onto_the_verdict() -> None:
    def soft(snap: Snapshot, req: CheckRequest, feature: Feature, now: datetime) -> Verdict:
        return Verdict(
            allowed=True,
            reason="soft_limit_exceeded",
            warnings=("exports over the soft limit",),
            limit={"meter": "exports", "limit": 10, "used": 11},
        )

    def note(snap: Snapshot, req: CheckRequest, feature: Feature, now: datetime) -> Verdict:
        return Verdict(allowed=True, reason="ok", warnings=("renewal due",))

    verdict = evaluate(snapshot(), request("reports"), NOW, gates=[soft, note])
    assert verdict.allowed
    assert verdict.warnings == ("exports over the soft limit", "renewal due")
    assert verdict.limit == {"meter": "exports", "limit": 10, "used": 11}

    def deny(snap: Snapshot, req: CheckRequest, feature: Feature, now: datetime) -> Verdict:
        return Verdict(allowed=False, reason="usage_limit_reached")

    assert evaluate(snapshot(), request("reports"), NOW, gates=[soft, deny]).reason == (
        "usage_limit_reached"
    )


def test_batch_gates_see_each_feature() -> None:
    seen: list[str] = []

    def gate(snap: Snapshot, req: CheckRequest, feature: Feature, now: datetime) -> None:
        seen.append(f"{req.subject}/{feature.name}")

    base = request("ignored", subject="u-1")
    evaluate_many(snapshot(), ["reports", "editor"], base, NOW, gates=[gate])
    assert seen == ["u-1/reports", "u-1/editor"]


# -- entitled_features and the batch --------------------------------------------------------


def test_entitled_features_applies_unexpired_overrides() -> None:
    snap = snapshot(
        addons=["audit_pack"],
        overrides=[
            grant("sso"),
            grant("scim", expires_at=NOW),  # expired
            revoke("reports", expires_at=NOW + HOUR),
            revoke("dashboards", expires_at=NOW - HOUR),  # expired
            grant("editor"),
            revoke("editor"),
        ],
    )
    assert entitled_features(snap, NOW) == (snap.base_features | {"sso"}) - {"reports", "editor"}
    assert "dashboards" in entitled_features(snap, NOW)
    assert "reports" in entitled_features(snap, NOW + HOUR)


def test_entitled_features_of_unknown_customer_is_empty() -> None:
    assert entitled_features(snapshot(known=False), NOW) == frozenset()


ALL = sorted(catalog().features) + ["teleport"]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"plan": "enterprise", "attributes": {"region": "eu"}},
        {"plan": "enterprise", "attributes": {"region": "cn"}, "overrides": [revoke("audit_log")]},
        {"plan": "sso_only", "kind": "trial", "overrides": [grant("scim"), grant("audit_log")]},
        {"kind": "trial", "ends_at": NOW},
        {"starts_at": NOW + HOUR},
        {"contract_": None},
        {"catalog_": None},
        {"known": False},
    ],
)
def test_batch_equals_one_check_per_feature(fields: dict[str, Any]) -> None:
    snap = snapshot(**fields)
    base = request("reports", subject="u-1", context={"tags": ["beta"]})
    singles = [
        evaluate(snap, request(name, subject="u-1", context={"tags": ["beta"]}), NOW)
        for name in ALL
    ]
    assert evaluate_many(snap, ALL, base, NOW) == singles


def test_a_feature_named_twice_in_a_batch_is_decided_once() -> None:
    seen: list[str] = []

    def gate(snap: Snapshot, req: CheckRequest, feature: Feature, now: datetime) -> None:
        seen.append(feature.name)

    verdicts = evaluate_many(snapshot(), ["reports", "editor", "reports"], request("x"), NOW,
                             gates=[gate])  # fmt: skip
    assert seen == ["reports", "editor"]
    assert verdicts[0] == verdicts[2]


def test_batch_of_nothing_is_empty() -> None:
    assert evaluate_many(snapshot(), [], request("reports"), NOW) == []
