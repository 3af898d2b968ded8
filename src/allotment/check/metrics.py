"""Prometheus metrics of the decision path."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHECK_LATENCY = Histogram(
    "allotment_check_seconds",
    "Time spent deciding a check inside the service (snapshot read + evaluation)",
    ["endpoint"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
)
DECISIONS = Counter("allotment_decisions_total", "Decisions by reason", ["allowed", "reason"])
DECISIONS_DROPPED = Counter(
    "allotment_decisions_dropped_total", "Decision log records dropped under overload or outage"
)
USAGE_READS = Counter(
    "allotment_usage_reads_total",
    "Meter-use reads for checks: `demand` (a check waited on it) or `refresh` (in background)",
    ["kind"],
)
USAGE_READ_SECONDS = Histogram(
    "allotment_usage_read_seconds",
    "Meter-use reads by kind (demand, refresh) and stage: `connect` (waiting for a pooled "
    "connection), `total` (the whole read, connection, queries and filling the entries), "
    "`wait` (demand only: how long each check waited on it), "
    "`late` (refresh only: how much later than due a pass started: the event loop's lag)",
    ["kind", "stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SNAPSHOT_CACHE = Counter(
    "allotment_snapshot_cache_total", "Snapshot lookups by level and result", ["level", "result"]
)
INVALIDATION_LAG = Histogram(
    "allotment_invalidation_lag_seconds",
    "From a committed change to this worker dropping the affected snapshots",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
