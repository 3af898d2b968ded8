"""Prometheus metrics shared across domains (each domain may add its own next to its code)."""

from __future__ import annotations

import gc
import time

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

GC_PAUSES = Histogram(
    "allotment_gc_pause_seconds",
    "Time the cyclic garbage collector stopped the process, by generation",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)


def watch_gc() -> None:
    """Time every collection of the cyclic GC into `allotment_gc_pause_seconds` (a pause of
    the whole event loop, which the request histograms cannot see). Idempotent."""
    if _gc_timer in gc.callbacks:
        return
    gc.callbacks.append(_gc_timer)


_gc_started = 0.0
_gc_observers = [GC_PAUSES.labels(generation=str(g)) for g in range(3)]


def _gc_timer(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        _gc_observers[info["generation"]].observe(time.perf_counter() - _gc_started)
