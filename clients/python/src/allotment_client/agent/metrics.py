"""The agent's Prometheus metrics, on a registry of its own (`GET /metrics`).

allotment_agent_decisions_total{endpoint, by}     by="agent" (from an artifact) |
                                                  "upstream" (forwarded, answered) |
                                                  "unavailable" (neither: 503/429)
allotment_agent_upstream_errors_total{kind}       "unreachable" | "5xx"
allotment_agent_events_total{result}              "spooled" | "rejected" (refused here) |
                                                  "delivered" | "refused" (by the upstream)
allotment_agent_spool_backlog                     events spooled, not yet acknowledged
allotment_agent_artifacts                         customers with a usable artifact
allotment_agent_stream_connected                  1 while the change stream is open
allotment_agent_upstream_up                       1 when the last probe of /healthz answered
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

ENDPOINTS = ("check", "batch", "ofrep", "ofrep_bulk")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "allotment_agent_decisions_total",
            "Checks and flag evaluations, by who answered them",
            ["endpoint", "by"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "allotment_agent_upstream_errors_total",
            "Calls to the upstream that got no answer, or a 5xx",
            ["kind"],
            registry=self.registry,
        )
        self.events = Counter(
            "allotment_agent_events_total",
            "Usage events, by what became of them",
            ["result"],
            registry=self.registry,
        )
        self.spool_backlog = Gauge(
            "allotment_agent_spool_backlog",
            "Events spooled, not yet acknowledged",
            registry=self.registry,
        )
        self.artifacts = Gauge(
            "allotment_agent_artifacts", "Customers with a usable artifact", registry=self.registry
        )
        self.stream_connected = Gauge(
            "allotment_agent_stream_connected",
            "1 while the change stream is open",
            registry=self.registry,
        )
        self.upstream_up = Gauge(
            "allotment_agent_upstream_up",
            "1 when the last probe of the upstream's /healthz answered",
            registry=self.registry,
        )
        # Bound once: the hot path increments without a label lookup.
        self.by = {
            (endpoint, by): self.decisions.labels(endpoint, by)
            for endpoint in ENDPOINTS
            for by in ("agent", "upstream", "unavailable")
        }
