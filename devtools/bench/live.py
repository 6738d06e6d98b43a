"""Live latency: offered load at a fixed rate while probe readings (one device) and alert
probes (heating leak_detected, a new device each) measure publish -> queryable and
publish -> alert message."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

from devtools.bench.common import ALERT_RULE, PROBE_SITE, local_iso, percentile, progress
from devtools.bench.env import Env
from devtools.bench.procs import proc_cpu_s
from devtools.bench.publish import PublishJob


def wait_for_quiet_influxd(env: Env, *, busy_cpu_s: float = 0.2, max_wait_s: float = 90.0) -> float:
    """Wait until influxd uses less than `busy_cpu_s` of CPU per second (its compactions of
    the capacity runs' points are over); return how long that took. The live figures are
    about the service in steady state, not about InfluxDB compacting 1.2 M earlier points
    on the same two cores."""
    started = time.monotonic()
    pid = env.server_pids[1]
    before = proc_cpu_s(pid)
    while time.monotonic() - started < max_wait_s:
        time.sleep(1.0)
        now = proc_cpu_s(pid)
        if now - before < busy_cpu_s:
            break
        before = now
    return time.monotonic() - started


def live_latency(env: Env, db: str, *, seconds: float, rate: float, tag: str) -> dict[str, Any]:
    """Offered load at `rate` readings/s; ingest probes and alert probes on the side."""
    import paho.mqtt.client as mqtt

    quiet_s = wait_for_quiet_influxd(env)
    progress(f"live: influxd quiet after {quiet_s:.0f}s")

    # Background load: the simulated fleet, timestamps three days back (no overlap).
    start_iso = local_iso(datetime.now(timezone.utc) - timedelta(days=3))
    total = int(rate * seconds)
    job = PublishJob(env.mosquitto.url, f"bench-live-{tag}",
                     {"type": "sim", "sites": 500, "seed": 7, "start_iso": start_iso}, total,
                     processes=1, rate=rate)
    env.jobs.append(job)

    probe_sent: dict[int, float] = {}       # ts_ms -> publish time
    probe_seen: dict[int, float] = {}
    alert_sent: dict[str, float] = {}       # device -> publish time
    alert_seen: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()
    run_id = f"{int(time.time()) % 100000:05d}"

    def on_message(client, userdata, msg) -> None:
        now = time.monotonic()
        if msg.retain or not msg.payload:
            return
        device = msg.topic.split("/")[2]
        with lock:
            if device in alert_sent and device not in alert_seen:
                alert_seen[device] = now

    subscribed = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{tag}", protocol=mqtt.MQTTv311)
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe(f"alerts/{PROBE_SITE}/+/{ALERT_RULE}", qos=1)
    client.connect("127.0.0.1", env.mosquitto.port, keepalive=30)
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("probe client could not subscribe to alerts")

    def poll_influx() -> None:
        http = httpx.Client(timeout=10)
        since = int(time.time() * 1000) - 60_000
        while not stop.is_set():
            try:
                r = http.get(f"{env.influxd.url}/query", params={
                    "db": db, "epoch": "ms",
                    "q": f"SELECT pm25 FROM dust WHERE device = 'PROBE{run_id}' AND time > {since}ms"})
                now = time.monotonic()
                for res in r.json().get("results", []):
                    for s in res.get("series") or []:
                        for ts, _ in s["values"]:
                            with lock:
                                if ts in probe_sent and ts not in probe_seen:
                                    probe_seen[ts] = now
                # Only skip what is already seen: with several ingest workers, probes reach
                # InfluxDB out of order, so the newest seen says nothing about older ones.
                with lock:
                    unseen = [t for t in probe_sent if t not in probe_seen]
                    since = (min(unseen) - 1) if unseen else max(probe_sent, default=since)
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        http.close()

    poller = threading.Thread(target=poll_influx, name="bench-poll", daemon=True)
    poller.start()
    progress(f"live: {rate:,.0f} readings/s offered for {seconds:.0f}s with ingest and alert probes")
    job.start()
    t_end = time.monotonic() + seconds
    i = 0
    last_ts = 0
    try:
        while time.monotonic() < t_end:
            ts = max(int(time.time() * 1000), last_ts + 1)
            last_ts = ts
            payload = json.dumps({"ts": ts, "values": {"pm10": 40.0, "pm25": 20.0}}).encode()
            with lock:
                probe_sent[ts] = time.monotonic()
            client.publish(f"telemetry/dust/{PROBE_SITE}/PROBE{run_id}", payload, qos=1)
            if i % 5 == 0:  # an alert probe every 250 ms, each on a new device
                device = f"LEAK{run_id}{i // 5:05d}"
                payload = json.dumps({"ts": ts, "values": {"leak_detected": True}}).encode()
                with lock:
                    alert_sent[device] = time.monotonic()
                client.publish(f"telemetry/heating/{PROBE_SITE}/{device}", payload, qos=1)
            i += 1
            time.sleep(0.05)
        offered_acked, offered_s = job.wait(timeout=seconds + 120)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if len(probe_seen) == len(probe_sent) and len(alert_seen) == len(alert_sent):
                    break
            time.sleep(0.1)
    finally:
        stop.set()
        poller.join(5)
        client.disconnect()
        client.loop_stop()
    ingest = [(probe_seen[k] - probe_sent[k]) * 1000 for k in probe_seen]
    alerts = [(alert_seen[k] - alert_sent[k]) * 1000 for k in alert_seen]
    # A probe still missing when we gave up took at least until now: count it with that
    # lower bound (censored) rather than leave it out, and say so.
    end = time.monotonic()
    ingest_censored = [(end - t) * 1000 for k, t in probe_sent.items() if k not in probe_seen]
    alert_censored = [(end - t) * 1000 for k, t in alert_sent.items() if k not in alert_seen] if alerts else []
    progress(f"live: {len(ingest)}/{len(probe_sent)} ingest probes, {len(alerts)}/{len(alert_sent)} alerts seen")
    return {"live_seconds": seconds, "live_waited_for_quiet_influxd_s": round(quiet_s, 1),
            "live_offered_per_s": round(offered_acked / offered_s) if offered_s else None,
            "live_offered_target_per_s": rate,
            "ingest_probes_sent": len(probe_sent), "ingest_probes_seen": len(ingest),
            "alert_probes_sent": len(alert_sent), "alert_probes_seen": len(alerts),
            "latency_is_lower_bound": bool(ingest_censored or alert_censored),
            "p50_ingest_ms": percentile(ingest + ingest_censored, 0.50), "p99_ingest_ms": percentile(ingest + ingest_censored, 0.99),
            "max_ingest_ms": percentile(ingest + ingest_censored, 1.0),
            "p50_alert_ms": percentile(alerts + alert_censored, 0.50), "p99_alert_ms": percentile(alerts + alert_censored, 0.99),
            "max_alert_ms": percentile(alerts + alert_censored, 1.0)}
