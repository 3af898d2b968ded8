"""Every reason code a check answers (docs/check.md, "Reason codes"), as one closed set.

The OpenAPI document lists them as an enum (`DecisionRead.reason`), so a generated client
can switch on them; `tests/check/test_reasons.py` proves the evaluator and the gates answer
no other. A rule's own words travel beside `rule_denied` in `rule_reason`, never here.
"""

from __future__ import annotations

from typing import Literal, get_args

Reason = Literal[
    "ok",
    "customer_unknown",
    "no_active_contract",
    "contract_not_started",
    "contract_expired",
    "trial_expired",
    "feature_unknown",
    "feature_not_in_plan",
    "dependency_missing",
    "seat_required",
    "guest_not_allowed",
    "instance_required",
    "instance_unknown",
    "lease_expired",
    "usage_limit_reached",
    "soft_limit_exceeded",
    "credits_exhausted",
    "tenant_unknown",
    "tenant_quota_reached",
    "rule_denied",
    "outage_default",
]

REASONS: frozenset[str] = frozenset(get_args(Reason))
