"""Ingest counters, in a registry owned by the service (no global state), ready for the
Prometheus endpoint of the API. Counters move once per group commit or write batch,
never per message, so they cost nothing on the hot path."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("citywatch_received", "Messages received from all inputs", ["source"], registry=r)
        self.accepted_readings = Counter("citywatch_readings_accepted", "Validated readings and events spooled",
                                         registry=r)
        self.rejected = Counter("citywatch_rejected", "Messages rejected to the dead-letter store", registry=r)
        self.stored = Counter("citywatch_stored", "Lines InfluxDB accepted", registry=r)
        self.write_rejected = Counter("citywatch_write_rejected", "Lines InfluxDB refused (dead-lettered)",
                                      registry=r)
        self.write_retries = Counter("citywatch_write_retries", "InfluxDB writes retried", registry=r)
        self.commits = Counter("citywatch_spool_commits", "Group commits (fsyncs)", registry=r)
        self.backlog = Gauge("citywatch_spool_backlog", "Lines spooled and not yet in InfluxDB", registry=r)
        self.backlog_bytes = Gauge("citywatch_spool_backlog_bytes", "Bytes of spool not yet in InfluxDB",
                                   registry=r)
        self.disk_free = Gauge("citywatch_spool_disk_free_bytes", "Free bytes on the spool's filesystem",
                               registry=r)
        self.disk_pause_threshold = Gauge("citywatch_spool_disk_pause_threshold_bytes",
                                          "Intake pauses when free bytes fall below this", registry=r)
        self.reclaimed = Counter("citywatch_spool_reclaimed_bytes", "Consumed spool bytes given back to the disk",
                                 registry=r)
        self.intake_paused = Gauge("citywatch_intake_paused", "1 while intake is paused (disk nearly full)",
                                   registry=r)
        self.intake_pauses = Counter("citywatch_intake_pauses", "Times intake paused for lack of disk space",
                                     registry=r)
        self.intake_resumes = Counter("citywatch_intake_resumes", "Times intake resumed after a pause", registry=r)
        self.commit_failures = Counter("citywatch_commit_failures",
                                       "Group commits that failed (disk full, I/O error) and were retried",
                                       registry=r)
        self.storage_failing = Gauge("citywatch_storage_failing",
                                     "1 while writes to a store fail (retried; nothing acknowledged meanwhile)",
                                     ["store"], registry=r)
        self.deadletters_evicted = Counter("citywatch_deadletters_evicted",
                                           "Dead letters evicted, oldest first, by quota or retention", ["reason"],
                                           registry=r)
        self.write_latency = Histogram("citywatch_write_seconds", "InfluxDB write latency", registry=r,
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.commit_latency = Histogram("citywatch_commit_seconds", "Group commit (write + fsync) latency",
                                        registry=r, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1))
        self.mqtt_connected = Gauge("citywatch_mqtt_connected", "1 while connected to the broker", registry=r)
        self.influx_up = Gauge("citywatch_influx_up", "1 while the last InfluxDB write succeeded", registry=r)

    def snapshot(self) -> dict[str, float]:
        """Plain numbers for logs and tests."""
        out: dict[str, float] = {}
        for metric in self.registry.collect():
            for s in metric.samples:
                if s.name.endswith(("_created", "_bucket")):
                    continue
                key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in s.labels.items()) + "}" if s.labels else "")
                out[key] = s.value
        return out
