"""A policy for bought quantities, trial conversion and devices per seat: the demo catalog
plus `basic` (a flat 310.00 a month, for a trial) and `licensed` (team's features, bought
seats and instance licences, two devices per seat). October 2026 has 31 days: 31.00 a month
is 1.00 a day."""

from __future__ import annotations

from typing import Any

from tests.factories.policies_for_contracts import demo_document


def licensing_document(*, devices_per_seat: int = 2) -> dict[str, Any]:
    document = demo_document()
    document["plans"]["basic"] = {
        "features": ["reports", "dashboards", "editor", "viewer"],
        "seats": {"limit": 5, "model": "named"},
        "instances": {"limit": 3},
        "price": {"base": "310.00"},
    }
    document["plans"]["licensed"] = {
        "extends": "team",
        "seats": {"limit": 40, "devices_per_seat": devices_per_seat},
        "instances": {"limit": 20},
        "price": {
            "base": "310.00",
            "seat": {"unit": "31.00", "basis": "contracted", "included": 0},
            "instance_hour": "0",
            "instance_licence": {
                "unit": "31.00",
                "basis": "contracted",
                "overage_unit": "62.00",
            },
        },
    }
    return document
