"""Small policy documents for the policy tests: a valid base to break one thing at a time."""

from __future__ import annotations

import copy
from typing import Any

from allotment.policy import validate

BASE: dict[str, Any] = {
    "currency": "USD",
    "features": {
        "reports": {},
        "editor": {"seat": "required"},
        "viewer": {"seat": "required", "guests": True},
        "agent": {"instance": "required"},
        "api": {"meter": "api_calls"},
        "audit_log": {},
        "sso": {"requires": ["audit_log"]},
        "scim": {"requires": ["sso"]},
    },
    "meters": {
        "api_calls": {"event_type": "api.call", "aggregation": "sum", "property": "count"},
        "exports": {"event_type": "export.created", "aggregation": "count"},
    },
    "plans": {
        "team": {
            "attributes": {"edition": "team", "support_level": "standard"},
            "features": ["reports", "editor", "viewer", "api"],
            "seats": {
                "limit": 10,
                "model": "named",
                "guests": 5,
                "burst": {"extra": 2, "window": "72h"},
            },
            "instances": {"limit": 3, "kinds": {"vm": 1, "cluster": 4}, "lease_ttl": "10m"},
            "limits": {"api_calls": {"limit": 100000, "period": "month", "enforcement": "hard"}},
            "price": {
                "base": "500.00",
                "seat": {"unit": "20.00", "basis": "peak", "included": 5},
                "burst_seat_day": "2.00",
                "instance_hour": "0.05",
                "meters": {
                    "api_calls": {
                        "included": 100000,
                        "tiers": [{"up_to": 1000000, "unit": "0.001"}, {"unit": "0.0005"}],
                    }
                },
            },
        },
        "enterprise": {
            "extends": "team",
            "features": ["+sso", "+audit_log", "+agent"],
            "seats": {"limit": 100},
        },
    },
    "addons": {"audit_pack": {"features": ["audit_log"], "price": "100.00"}},
    "rules": [
        {
            "feature": "sso",
            "when": "contract.attributes.region != 'cn'",
            "reason": "region_not_supported",
        }
    ],
}


def base() -> dict[str, Any]:
    """A fresh, valid document to change."""
    return copy.deepcopy(BASE)


def errors_by_path(raw: object) -> dict[str, list[str]]:
    result = validate(raw)
    found: dict[str, list[str]] = {}
    for error in result.errors:
        found.setdefault(error["path"], []).append(error["message"])
    if found:
        assert result.document is None
    return found


def assert_error(raw: object, path: str, *fragments: str) -> str:
    """Assert an error at exactly `path` whose message holds every fragment; return it."""
    found = errors_by_path(raw)
    assert path in found, f"no error at {path}; errors: {found}"
    for message in found[path]:
        if all(fragment in message for fragment in fragments):
            return message
    raise AssertionError(f"no message at {path} containing {fragments}: {found[path]}")
