"""Prometheus metrics of alerts and events (next to the code, as usage/metrics.py does)."""

from __future__ import annotations

from prometheus_client import Counter

EVENTS = Counter(
    "allotment_alert_events_total",
    "Events announced (committed), by type: usage.threshold_reached, instances.surge, …",
    ["type"],
)
