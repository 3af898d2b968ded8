"""Prometheus metrics of the change stream (per worker)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

STREAM_CLIENTS = Gauge("allotment_stream_clients", "Change-stream clients connected to this worker")
STREAM_EVENTS = Counter(
    "allotment_stream_events_total",
    "Events sent to change-stream clients, by event (customer.changed, policy.published, resync)",
    ["event"],
)
STREAM_RESYNCS = Counter(
    "allotment_stream_resyncs_total",
    "resync events sent to change-stream clients, by reason (malformed, epoch, trimmed, "
    "unknown, unavailable, overflow, reconnected, gap)",
    ["reason"],
)
STREAM_LAG = Histogram(
    "allotment_stream_lag_seconds",
    "From a committed change to this worker's hub handing it to its stream clients",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
