"""Prometheus metrics of usage ingestion (next to the code, as check/metrics.py does).

Both count events that an answer reports and that count towards no total: see
docs/usage.md ("Events that count nowhere").
"""

from __future__ import annotations

from prometheus_client import Counter

EVENTS_UNMETERED = Counter(
    "allotment_events_unmetered_total",
    "Accepted events whose type no meter of the customer's policy reads (stored, not counted)",
)
EVENTS_CONFLICTS = Counter(
    "allotment_events_conflicts_total",
    "Events refused because their (source, id) was accepted with another payload",
)
