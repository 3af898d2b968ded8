"""Whole-document checks of the `alerts` section, each with its path (docs/policy.md, `alerts`).

Called from `checks.py` on the raw document, next to the model validation (which checks each
value: percentages, days, factors, windows); values the models reject are skipped here.

    check                                           path of the error
    a usage surge on an unknown meter               alerts.usage_surge.api_cals
    a usage surge on a level (average, percentile)  alerts.usage_surge.storage_gb
    a usage surge window not whole hours            alerts.usage_surge.api_calls.window
    a percentage or a day listed twice              alerts.usage_thresholds[1],
                                                    alerts.trial_ending_days[2], …
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from allotment.policy.durations import DURATION_PATTERN, parse_duration
from allotment.policy.paths import Location

Finding = tuple[Location, str]

HOUR = timedelta(hours=1)
_DURATION = re.compile(DURATION_PATTERN)
LISTS = ("usage_thresholds", "trial_ending_days", "renewal_upcoming_days")


def check_alerts(alerts: object, *, meter_names: set[str], levels: set[str]) -> Iterator[Finding]:
    if not isinstance(alerts, Mapping):
        return
    for key in LISTS:
        values = alerts.get(key)
        if not isinstance(values, list):
            continue
        seen: set[Any] = set()
        for index, value in enumerate(values):
            if isinstance(value, int) and not isinstance(value, bool):
                if value in seen:
                    yield (("alerts", key, index), f"{value} is listed twice")
                seen.add(value)
    surges = alerts.get("usage_surge")
    if not isinstance(surges, Mapping):
        return
    for meter, surge in surges.items():
        if not isinstance(meter, str):
            continue
        window = surge.get("window") if isinstance(surge, Mapping) else None
        readable = isinstance(window, str) and _DURATION.fullmatch(window) is not None
        if readable and parse_duration(str(window)) % HOUR:
            yield (
                ("alerts", "usage_surge", meter, "window"),
                f"'{window}' is not a whole number of hours: use is counted by the hour, "
                "so a usage surge's window is 1h, 2h, 1d, …",
            )
        if meter not in meter_names:
            message = f"unknown meter '{meter}'"
            close = difflib.get_close_matches(meter, sorted(meter_names), n=1)
            yield (
                ("alerts", "usage_surge", meter),
                f"{message} (did you mean '{close[0]}'?)" if close else message,
            )
        elif meter in levels:
            yield (
                ("alerts", "usage_surge", meter),
                f"meter '{meter}' is a level (an average or a percentile of hourly values), "
                "not a use that adds up over a window: it has no surge",
            )
