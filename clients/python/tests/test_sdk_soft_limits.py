"""Past a soft limit the service allows with reason `soft_limit_exceeded` (and the warning);
a local answer from an artifact issued past it says the same, not `ok`."""

from __future__ import annotations

from typing import Any

from allotment_client.artifacts import _entries


def claims(exhausted: bool) -> dict[str, Any]:
    reason = "soft_limit_exceeded" if exhausted else "ok"
    return {
        "sub": "acme",
        "policy_version": 1,
        "contract_revision": 1,
        "features": [{"feature": "exports", "allowed": True, "reason": reason, "meter": "exports"}],
        "limits": {
            "meters": {
                "exports": {
                    "limit": 1000,
                    "used": 1200 if exhausted else 10,
                    "period": "month",
                    "enforcement": "soft",
                    "exhausted": exhausted,
                }
            }
        },
        "credits": None,
    }


def test_past_a_soft_limit_the_local_answer_gives_the_services_reason() -> None:
    past = _entries(claims(True), {})["exports"].plain
    assert past is not None and past.allowed
    assert past.reason == "soft_limit_exceeded" and "soft_limit_exceeded" in past.warnings
    within = _entries(claims(False), {})["exports"].plain
    assert within is not None and within.allowed and within.reason == "ok" and not within.warnings
