"""Prometheus metrics shared across domains (each domain may add its own next to its code)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUEST_LATENCY = Histogram(
    "allotment_request_seconds",
    "HTTP request latency by route template",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

AUDIT_RECORDS = Counter("allotment_audit_records_total", "Audit records appended")

ALLOCATIONS = Counter(
    "allotment_allocations_total",
    "Allocation attempts by pool (seats, guests, sessions, instances) and outcome "
    "(granted, renewed, refused, released, expired)",
    ["pool", "outcome"],
)
