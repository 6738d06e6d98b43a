"""The gateway's Prometheus counters, registered in the service's ingest registry (so
`GET /metrics` shows them). No label carries an address or MN: an attacker must not be
able to grow the metric set."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.connections = Gauge("citywatch_hj212_connections", "Open HJ 212 connections", registry=r)
        self.connections_refused = Counter(
            "citywatch_hj212_connections_refused", "Connections closed at accept or evicted",
            ["reason"], registry=r)  # per_address | capacity | locked | evicted
        self.connections_closed = Counter(
            "citywatch_hj212_connections_closed", "Connections the gateway closed", ["reason"],
            registry=r)  # auth_deadline | idle | backoff | locked | bad_bytes
        self.auth_failures = Counter("citywatch_hj212_auth_failures",
                                     "Failed logins (unknown MN, wrong PW, CRC before login)", registry=r)
        self.lockouts = Counter("citywatch_hj212_lockouts", "Lockouts started", ["scope"], registry=r)
        self.locked_frames = Counter("citywatch_hj212_locked_frames",
                                     "Frames refused unchecked because their MN or address is locked out", registry=r)
        self.locked_subjects = Gauge("citywatch_hj212_locked_subjects", "MNs and addresses locked out now",
                                     registry=r)
        self.deadletters_dropped = Counter(
            "citywatch_hj212_deadletters_dropped",
            "Dead letters of unauthenticated sources beyond the per-source rate: counted, not stored", registry=r)
