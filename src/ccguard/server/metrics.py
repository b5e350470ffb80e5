"""Prometheus metrics, on a registry owned by one app (no process-global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("ccguard_requests", "Requests by endpoint and outcome.", ["endpoint", "outcome"], registry=r)
        self.blocks = Counter("ccguard_blocks", "Blocked requests by stage and category.", ["stage", "category"], registry=r)
        self.latency = Histogram(
            "ccguard_check_latency_seconds", "Classifier latency by stage.", ["stage"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.stream_lag = Histogram(
            "ccguard_stream_lag_seconds", "Time a streamed piece waited in the proxy, from its arrival from the upstream "
            "to its release.", registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.upstream_errors = Counter("ccguard_upstream_errors", "Upstream failures by kind.", ["kind"], registry=r)
        self.classifier_errors = Counter("ccguard_classifier_errors", "Classifier failures by stage.", ["stage"], registry=r)
        self.escalations = Counter("ccguard_escalations", "Prompts for which the input cascade's stage 2 was consulted.",
                                   registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
