"""A metered feature an enforcing credit wallet pays is the service's to decide locally:
its `credits_exhausted` follows the live balance, which an artifact does not hold."""

from __future__ import annotations

from typing import Any

from allotment_client.artifacts import _entries


def claims(credits: Any) -> dict[str, Any]:
    return {
        "sub": "acme",
        "policy_version": 1,
        "contract_revision": 1,
        "features": [
            {"feature": "api", "allowed": True, "reason": "ok", "meter": "api_calls"},
            {"feature": "exports", "allowed": True, "reason": "ok", "meter": "exports"},
            {"feature": "reports", "allowed": True, "reason": "ok"},
        ],
        "limits": {"meters": {}},
        "credits": credits,
    }


def test_an_enforcing_wallet_sends_its_meters_to_the_service() -> None:
    wallet = {"balance": "0.00", "enforce": True, "applies_to": ["meter:api_calls"]}
    entries = _entries(claims(wallet), {})
    assert entries["api"].plain is None  # the service decides on the balance
    assert entries["exports"].plain is not None and entries["exports"].plain.allowed
    assert entries["reports"].plain is not None


def test_a_wallet_that_does_not_enforce_or_no_wallet_changes_nothing() -> None:
    for credits in (None, {"enforce": False, "applies_to": ["meter:*"]}):
        entries = _entries(claims(credits), {})
        assert entries["api"].plain is not None and entries["api"].plain.allowed
    prefix = _entries(claims({"enforce": True, "applies_to": ["meter:*"]}), {})
    assert prefix["api"].plain is None and prefix["exports"].plain is None


def test_a_used_up_meter_or_wallet_in_the_artifact_is_the_services_to_decide() -> None:
    """The entitlements (and so the artifact) deny a feature whose hard limit or credits were
    used up at issue; both follow live state (a new period, a top-up), so never locally."""
    document = claims(None)
    document["features"][0].update(allowed=False, reason="usage_limit_reached")
    document["features"][1].update(allowed=False, reason="credits_exhausted")
    entries = _entries(document, {})
    assert entries["api"].plain is None and entries["exports"].plain is None
    assert entries["reports"].plain is not None and entries["reports"].plain.allowed
