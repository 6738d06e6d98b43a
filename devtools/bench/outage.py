"""`citywatch bench --outage N`: a long InfluxDB outage. N readings are spooled with
influxd stopped, then influxd starts and the spool drains; readings/s of the drain, the
service's RSS while it drains, alert latency meanwhile, lost."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from devtools.bench.capacity import capacity_run
from devtools.bench.common import ALERT_RULE, PROBE_SITE, SITES, local_iso, percentile, progress
from devtools.bench.env import Env, bench_env
from devtools.bench.procs import own_rss_mb, drop_session, proc_cpu_s, proc_rss_mb, service_child
from devtools.bench.publish import PublishJob
from devtools.bench.report import emit, git_commit, machine_info
from devtools.servers import free_port


class AlertProbe:
    """Every `every_s` a heating reading `leak_detected: true` on a new device; times
    publish → alert message (the engine's latency while the writer catches up)."""

    def __init__(self, mqtt_url: str, tag: str, every_s: float = 0.25) -> None:
        import paho.mqtt.client as mqtt

        from citywatch.settings import MqttAddress

        a = MqttAddress.parse(mqtt_url)
        self.sent: dict[str, float] = {}
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._every = every_s
        self._tag = tag
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{tag}",
                                  protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect(a.host, a.port)
        self.client.subscribe(f"alerts/{PROBE_SITE}/+/{ALERT_RULE}", qos=1)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="bench-alert-probe", daemon=True)

    def _on_message(self, client, userdata, msg) -> None:
        device = msg.topic.split("/")[2]
        with self._lock:
            if device in self.sent and device not in self.seen and msg.payload:
                self.seen[device] = time.monotonic()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            device = f"OUT{self._tag}{i:05d}"
            payload = json.dumps({"ts": int(time.time() * 1000), "values": {"leak_detected": True}}).encode()
            with self._lock:
                self.sent[device] = time.monotonic()
            self.client.publish(f"telemetry/heating/{PROBE_SITE}/{device}", payload, qos=1)
            i += 1
            self._stop.wait(self._every)

    def start(self) -> "AlertProbe":
        self._thread.start()
        return self

    def stop(self, settle_s: float = 5.0) -> list[float]:
        self._stop.set()
        self._thread.join(5)
        deadline = time.monotonic() + settle_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.seen) == len(self.sent):
                    break
            time.sleep(0.1)
        self.client.disconnect()
        self.client.loop_stop()
        end = time.monotonic()
        with self._lock:  # a probe still missing counts with its lower bound (censored)
            return [((self.seen.get(d) or end) - t) * 1000 for d, t in self.sent.items()]


def _metric(port: int, name: str) -> float | None:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def outage_run(env: Env, n: int) -> dict[str, Any]:
    """N readings spooled with InfluxDB stopped, then drained once it is back."""
    tag, db = "outage", "cw_outage"
    api_port = free_port()
    svc = env.track(service_child(env.root / tag / "service", mqtt_url=env.mosquitto.url,
                                  influx_url=env.influxd.url, database=db, client_id=f"bench-svc-{tag}",
                                  extra={"CW_INGEST_WORKERS": str(env.workers), "CW_API_TOKENS": "bench-outage-metrics=viewer",
                                         "CW_API_PORT": str(api_port)}))
    env.influxd.stop()
    progress(f"outage: influxd stopped; spooling {n:,} readings")
    svc.start()
    svc.wait_log("connected to broker")
    svc.wait_log("HTTP API and dashboard")
    per_s = SITES * (0.7 / 10 + 0.3 / 60)
    start = datetime.now(timezone.utc) - timedelta(seconds=n / per_s * 1.2 + 3600)
    t0 = time.monotonic()
    job = PublishJob(env.mosquitto.url, f"bench-pub-{tag}",
                     {"type": "sim", "sites": SITES, "seed": 11, "start_iso": local_iso(start)}, n)
    env.jobs.append(job)
    job.start()
    accepted, last_report = 0.0, 0.0
    while accepted < n:
        svc.check_alive()
        accepted = _metric(api_port, "citywatch_workers_readings_accepted_total") or 0.0
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            progress(f"outage: {accepted:,.0f} spooled")
        time.sleep(0.5)
    spool_s = time.monotonic() - t0
    acked, _ = job.wait()
    spool_mb = sum(p.stat().st_blocks * 512 for p in (env.root / tag / "service" / "data").glob("spool*/*")) / 1e6
    rss_before = proc_rss_mb(svc.pid)
    progress(f"outage: {n:,} spooled in {spool_s:.0f}s ({spool_mb:,.0f} MB on disk, service RSS {rss_before:.0f} MB); "
             f"starting influxd")

    # InfluxDB is back: measure the drain, sample RSS, and time alerts on the side.
    cpu0 = proc_cpu_s(svc.pid)
    env.influxd.start()
    t_up = time.monotonic()
    probe = AlertProbe(env.mosquitto.url, "d").start()
    rss: list[tuple[float, float]] = []
    t_first = None
    counted, last_change, last = 0, time.monotonic(), -1
    next_report = time.monotonic() + 15
    main_rss: list[float] = []
    while True:
        svc.check_alive()
        now = time.monotonic()
        rss.append((now - t_up, proc_rss_mb(svc.pid)))
        main_rss.append(own_rss_mb(svc.pid))
        try:
            counted = env.influx.count_readings(db)
        except httpx.HTTPError:
            counted = max(last, 0)
        if t_first is None and counted > 0:
            t_first = now
        if counted >= n:
            break
        if counted != last:
            last, last_change = counted, now
        elif now - last_change > 120:
            progress(f"outage: stuck at {counted:,}/{n:,} for 120s; giving up")
            break
        if now > next_report:
            next_report = now + 15
            progress(f"outage: {counted:,} stored, RSS {rss[-1][1]:.0f} MB (main process {main_rss[-1]:.0f} MB)")
        time.sleep(0.5)
    t_done = time.monotonic()
    cpu_s = proc_cpu_s(svc.pid) - cpu0
    alerts = probe.stop()
    time.sleep(0.5)
    counted = max(counted, env.influx.count_readings(db))
    svc.stop()
    drain_s = t_done - (t_first or t_up)
    rss_mb = [r for _, r in rss]
    # "Flat": the RSS of the second half of the drain against the first half.
    half = len(rss_mb) // 2
    progress(f"outage: drained {counted:,}/{n:,} in {drain_s:.1f}s ({counted / max(drain_s, 1e-9):,.0f}/s), "
             f"peak RSS {max(rss_mb):.0f} MB")
    return {"outage_n": n, "outage_acked": acked, "outage_counted": counted, "outage_lost": max(0, acked - counted),
            "outage_extra": max(0, counted - acked),
            "outage_spool_seconds": round(spool_s, 1), "outage_spool_readings_per_s": round(n / spool_s),
            "outage_spool_disk_mb": round(spool_mb, 1),
            "outage_first_write_after_s": round((t_first or t_done) - t_up, 1),
            "outage_drain_seconds": round(drain_s, 1),
            "outage_drain_readings_per_s": round(counted / drain_s) if drain_s > 0 else None,
            "outage_drain_cpu_s_per_100k": round(cpu_s * 100_000 / max(counted, 1), 2),
            "outage_rss_mb_before_drain": round(rss_before, 1),
            "outage_peak_rss_mb_during_drain": round(max(rss_mb), 1),
            "outage_rss_mb_first_half_max": round(max(rss_mb[:half] or rss_mb), 1),
            "outage_rss_mb_second_half_max": round(max(rss_mb[half:] or rss_mb), 1),
            # The main process (alert engine, API) and the MQTT ingest process (spool, writer) apart.
            "outage_peak_rss_mb_main_process": round(max(main_rss), 1),
            "outage_peak_rss_mb_ingest_process": round(max(r - m for r, m in zip(rss_mb, main_rss)), 1),
            "outage_alert_probes": len(alerts), "outage_p50_alert_ms": percentile(alerts, 0.50),
            "outage_p99_alert_ms": percentile(alerts, 0.99), "outage_max_alert_ms": percentile(alerts, 1.0)}


def run_outage_bench(args: argparse.Namespace) -> int:
    """`citywatch bench --outage N`: a reference capacity run (the normal capacity on this
    box, right now), then the long-outage run."""
    n = int(args.outage)
    started = time.monotonic()
    ref_n = min(n, int(getattr(args, "readings", None) or 200_000))
    title = f"outage mode, N = {n:,} (reference capacity run: {ref_n:,})"
    with bench_env(title, workers=int(getattr(args, "workers", None) or 1)) as env:
        per_s = SITES * (0.7 / 10 + 0.3 / 60)
        start = datetime.now(timezone.utc) - timedelta(days=30, seconds=ref_n / per_s * 1.2)
        ref, _, _ = capacity_run(env, "ref", ref_n, {"type": "sim", "sites": SITES, "seed": 5,
                                                      "start_iso": local_iso(start)}, baseline=False)
        drop_session(env.mosquitto.url, "bench-svc-ref")
        out = outage_run(env, n)
        result: dict[str, Any] = {
            "mode": "outage", **out,
            "reference_capacity_n": ref_n, "reference_readings_per_s": ref.as_dict()["readings_per_s"],
            "reference_drain_readings_per_s": ref.as_dict()["drain_readings_per_s"],
            "drain_vs_reference": (round(out["outage_drain_readings_per_s"] / ref.as_dict()["drain_readings_per_s"], 2)
                                   if out["outage_drain_readings_per_s"] and ref.drain_seconds else None),
            "machine": machine_info(), "git_commit": git_commit(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # others on the box skew the figures
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "bench_seconds": round(time.monotonic() - started, 1),
        }
        emit(args, result, outage_markdown(result))
        progress(f"done in {result['bench_seconds']:.0f}s")
        return 0 if result["outage_lost"] == 0 else 1


def outage_markdown(r: dict[str, Any]) -> str:
    def f(v, nd=0):
        return "n/a" if v is None else f"{v:,.{nd}f}"

    return "\n".join([
        f"citywatch bench (outage, N = {r['outage_n']:,}, {r['machine']['nproc']} cores, commit {r['git_commit']})",
        "",
        "| figure | value |", "|---|---:|",
        f"| spooled with InfluxDB down (readings/s) | {f(r['outage_spool_readings_per_s'])} |",
        f"| spool on disk (MB) | {f(r['outage_spool_disk_mb'], 1)} |",
        f"| first write after InfluxDB is back (s) | {f(r['outage_first_write_after_s'], 1)} |",
        f"| drain (readings/s) | {f(r['outage_drain_readings_per_s'])} |",
        f"| normal capacity, same box, same run (readings/s after connect) | "
        f"{f(r['reference_drain_readings_per_s'])} |",
        f"| drain / normal capacity | {f(r['drain_vs_reference'], 2)} |",
        f"| RSS before the drain / peak during it (MB) | {f(r['outage_rss_mb_before_drain'], 1)} / "
        f"{f(r['outage_peak_rss_mb_during_drain'], 1)} |",
        f"| RSS peak, first / second half of the drain (MB) | {f(r['outage_rss_mb_first_half_max'], 1)} / "
        f"{f(r['outage_rss_mb_second_half_max'], 1)} |",
        f"| p50 / p99 alert ms during the drain ({r['outage_alert_probes']} probes) | "
        f"{f(r['outage_p50_alert_ms'], 1)} / {f(r['outage_p99_alert_ms'], 1)} |",
        f"| lost (PUBACKed, not in InfluxDB) | {r['outage_lost']} |",
    ])
