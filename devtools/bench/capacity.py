"""Capacity: N readings queued in the broker, then the subscriber (the service or the
baseline) started and timed until InfluxDB counts all N; its CPU, peak RSS and the
servers' CPU over that time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from devtools.bench.common import progress, rounded
from devtools.bench.env import Env, Influx
from devtools.bench.procs import (Child, baseline_child, create_session, drop_session, proc_cpu_s,
                                  proc_peak_rss_mb, service_child)
from devtools.bench.publish import PublishJob


@dataclass
class Capacity:
    who: str
    n: int
    counted: int = 0
    seconds: float | None = None           # process start → all N queryable
    drain_seconds: float | None = None     # "connected to broker" → all N queryable
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    broker_cpu_s: float | None = None
    influx_cpu_s: float | None = None

    @property
    def lost(self) -> int:
        return max(0, self.n - self.counted)

    @property
    def extra(self) -> int:
        return max(0, self.counted - self.n)

    @property
    def per_s(self) -> float | None:
        return self.n / self.seconds if self.seconds else None

    def as_dict(self) -> dict[str, Any]:
        per100k = (lambda v: round(v * 100_000 / self.n, 3) if v is not None and self.n else None)
        return {"who": self.who, "n": self.n, "counted": self.counted, "lost": self.lost, "extra": self.extra,
                "seconds": rounded(self.seconds, 3), "readings_per_s": rounded(self.per_s, 0),
                "drain_readings_per_s": rounded(self.n / self.drain_seconds if self.drain_seconds else None, 0),
                "cpu_s_per_100k": per100k(self.cpu_s), "peak_rss_mb": rounded(self.peak_rss_mb, 1),
                "broker_cpu_s_per_100k": per100k(self.broker_cpu_s),
                "influx_cpu_s_per_100k": per100k(self.influx_cpu_s)}


def measure_drain(child: Child, influx: Influx, db: str, n: int, servers: tuple[int, int],
                  stall_s: float = 60.0, keep_running: bool = False) -> Capacity:
    """Start `child` (its queue already waits in the broker) and time until InfluxDB holds N."""
    cap = Capacity(child.name, n)
    cpu0 = [proc_cpu_s(pid) for pid in servers]
    child.start()
    connected_at = None
    last_change, last = time.monotonic(), -1
    try:
        while True:
            child.check_alive()
            if connected_at is None and "connected to broker" in child.log(since_start=True):
                connected_at = time.monotonic()
            try:
                counted = influx.count_readings(db)
            except httpx.HTTPError:
                counted = last
            now = time.monotonic()
            if counted >= n:
                cap.seconds = now - child.started_at
                cap.drain_seconds = now - connected_at if connected_at else None
                cap.cpu_s = proc_cpu_s(child.pid)
                cap.peak_rss_mb = proc_peak_rss_mb(child.pid)
                cpu1 = [proc_cpu_s(pid) for pid in servers]
                cap.broker_cpu_s, cap.influx_cpu_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
                cap.counted = counted
                break
            if counted != last:
                last, last_change = counted, now
            elif now - last_change > stall_s:
                progress(f"{child.name}: stuck at {counted}/{n} for {stall_s:.0f}s; giving up")
                cap.counted = max(counted, 0)
                cap.cpu_s = proc_cpu_s(child.pid)
                cap.peak_rss_mb = proc_peak_rss_mb(child.pid)
                break
            time.sleep(0.2)
    finally:
        if not keep_running:
            child.stop()
    # Anything beyond N (duplicates with new timestamps) shows up after a moment.
    time.sleep(0.5)
    cap.counted = max(cap.counted, influx.count_readings(db))
    return cap


def capacity_run(env: Env, tag: str, n: int, source: dict, *, baseline: bool = True,
                 keep_service: bool = False, mqtt_url: str | None = None,
                 ca_file: str | None = None) -> tuple[Capacity, Capacity | None, Child | None]:
    """One capacity measurement of the service (and the baseline on the same queued N).
    `mqtt_url`/`ca_file`: another listener of the same broker (the --tls run)."""
    mqtt_url, influx_url = mqtt_url or env.mosquitto.url, env.influxd.url
    db_svc, db_base = f"cw_{tag}", f"base_{tag}"
    extra = {"CW_INGEST_WORKERS": str(env.workers)} | ({"CW_MQTT_CA_FILE": ca_file} if ca_file else {})
    svc = env.track(service_child(env.root / tag / "service", mqtt_url=mqtt_url, influx_url=influx_url,
                                  database=db_svc, client_id=f"bench-svc-{tag}", extra=extra))
    base = env.track(baseline_child(env.root / tag / "baseline", mqtt_url=mqtt_url, influx_url=influx_url,
                                    database=db_base, client_id=f"bench-base-{tag}")) if baseline else None
    progress(f"{tag}: creating the persistent sessions")
    create_session(svc)
    if base is not None:
        create_session(base)
    progress(f"{tag}: queueing {n:,} readings in the broker (QoS 1)")
    job = PublishJob(mqtt_url, f"bench-pub-{tag}", source, n, ca_file=ca_file)
    env.jobs.append(job)
    acked, secs = job.start().wait()
    progress(f"{tag}: {acked:,} PUBACKed in {secs:.1f}s ({acked / max(secs, 1e-9):,.0f}/s); starting the service")
    svc_cap = measure_drain(svc, env.influx, db_svc, acked, env.server_pids, keep_running=keep_service)
    if not keep_service:
        drop_session(mqtt_url, f"bench-svc-{tag}", ca_file)
    progress(f"{tag}: service {svc_cap.per_s or 0:,.0f} readings/s ({svc_cap.seconds or 0:.1f}s), "
             f"counted {svc_cap.counted:,}/{acked:,}")
    base_cap = None
    if base is not None:
        base_cap = measure_drain(base, env.influx, db_base, acked, env.server_pids)
        drop_session(mqtt_url, f"bench-base-{tag}")
        progress(f"{tag}: baseline {base_cap.per_s or 0:,.0f} readings/s ({base_cap.seconds or 0:.1f}s), "
                 f"counted {base_cap.counted:,}/{acked:,}")
    return svc_cap, base_cap, (svc if keep_service else None)
