"""Validation and compilation of the policy's `alerts` section (docs/policy.md, `alerts`).
One test per error, each asserting the exact path it reports."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from allotment.policy import compile_policy, validate
from allotment.policy.catalog import DEFAULT_ALERTS, Surge
from tests.policy.documents import assert_error, base


def with_alerts(alerts: Any) -> dict[str, Any]:
    raw = base()
    raw["meters"]["storage"] = {
        "event_type": "storage.sampled",
        "aggregation": "average",
        "property": "gb",
    }
    raw["alerts"] = alerts
    return raw


def test_alerts_compile_with_their_defaults() -> None:
    result = validate(base())
    assert result.document is not None
    assert compile_policy(result.document).alerts == DEFAULT_ALERTS
    written = validate(
        with_alerts(
            {
                "usage_thresholds": [100, 50],
                "instance_surge": {"factor": "1.5", "window": "10m", "min": 4},
                "usage_surge": {"api_calls": {"factor": 3, "window": "2h"}},
                "trial_ending_days": [1, 14],
                "renewal_upcoming_days": [],
            }
        )
    )
    assert written.document is not None, written.errors
    alerts = compile_policy(written.document).alerts
    assert alerts.usage_thresholds == (50, 100)
    assert alerts.instance_surge == Surge(Decimal("1.5"), timedelta(minutes=10), 4)
    assert alerts.usage_surge["api_calls"] == Surge(Decimal(3), timedelta(hours=2), 1)
    assert alerts.trial_ending_days == (14, 1) and alerts.renewal_upcoming_days == ()


@pytest.mark.parametrize(
    ("alerts", "path", "fragment"),
    [
        ({"usage_treshold": [80]}, "alerts.usage_treshold", "did you mean 'usage_thresholds'"),
        ({"usage_thresholds": [80, 0]}, "alerts.usage_thresholds[1]", "greater than 0"),
        ({"usage_thresholds": [80, "90"]}, "alerts.usage_thresholds[1]", "valid integer"),
        ({"usage_thresholds": [80, 80]}, "alerts.usage_thresholds[1]", "80 is listed twice"),
        ({"trial_ending_days": [7, 7]}, "alerts.trial_ending_days[1]", "listed twice"),
        ({"renewal_upcoming_days": [0]}, "alerts.renewal_upcoming_days[0]", "greater than 0"),
        (
            {"instance_surge": {"factor": 1, "window": "1h"}},
            "alerts.instance_surge.factor",
            "a surge factor is above 1",
        ),
        (
            {"instance_surge": {"factor": 2.5, "window": "1h"}},
            "alerts.instance_surge.factor",
            'written quoted, as "2.5"',
        ),
        (
            {"instance_surge": {"factor": 2, "window": "soon"}},
            "alerts.instance_surge.window",
            "is not a duration",
        ),
        ({"instance_surge": {"window": "1h"}}, "alerts.instance_surge.factor", "required"),
        (
            {"instance_surge": {"factor": 2, "window": "1h", "min": 0}},
            "alerts.instance_surge.min",
            "greater than 0",
        ),
        (
            {"usage_surge": {"api_cals": {"factor": 2, "window": "1h"}}},
            "alerts.usage_surge.api_cals",
            "unknown meter 'api_cals' (did you mean 'api_calls'?)",
        ),
        (
            {"usage_surge": {"storage": {"factor": 2, "window": "1h"}}},
            "alerts.usage_surge.storage",
            "is a level",
        ),
        (
            {"usage_surge": {"api_calls": {"factor": 2, "window": "90m"}}},
            "alerts.usage_surge.api_calls.window",
            "not a whole number of hours",
        ),
    ],
)
def test_each_alerts_error_has_its_path(alerts: Any, path: str, fragment: str) -> None:
    assert_error(with_alerts(alerts), path, fragment)
