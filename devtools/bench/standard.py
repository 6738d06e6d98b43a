"""`citywatch bench`: capacity, loss, latency and cost of the service against the tutorial
pipeline (devtools/baseline.py), on one machine, with real servers.

Everything it starts lives in one temp dir and is stopped in `finally` (Ctrl-C too):
a mosquitto and an influxd on ephemeral ports, `citywatch run` and the baseline as
subprocesses, publisher worker processes. How each figure is measured is in
docs/benchmarks.md; the short version:

capacity  Create the subscriber's persistent session (start it, wait for "connected to
          broker", SIGTERM), queue N readings in the broker (QoS 1, every one PUBACKed),
          start the subscriber and time from process start until InfluxDB counts all N.
          The service and the baseline get the same N messages (both sessions are
          created before publishing, so the broker queues one copy for each).
lost      N minus what InfluxDB counts once it stops growing (extra = the reverse).
live      Offered load at a fixed rate while probe readings (one device) and alert
          probes (heating leak_detected, a new device each) measure publish → queryable
          and publish → alert message.
outage    (`--outage N`) A long InfluxDB outage: N readings are spooled with influxd
          stopped, then influxd starts and the spool drains; readings/s of the drain,
          the service's RSS while it drains, alert latency meanwhile, lost.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from devtools.servers import Influxd, Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# One field each reading of a kind always carries: count() of it counts readings once.
COUNT_FIELDS = {"dust": "pm10", "heating": "primary_supply_temp", "water": "turbidity"}
SCENARIO = "normal-day"
SITES = 200                 # capacity fleet: 140 dust (10 s), 40 heating + 20 water (60 s)
PROBE_SITE = "SBENCH"
ALERT_RULE = "heating_leak"  # fires on one reading (leak_detected is true), no `for`, no window

QUICK = {"readings": 50_000, "repeats": 1, "live_s": 10.0, "rate": 5000.0, "scaling": (), "hj212": (200, 5),
         "hj212_dialects": ("2017", "2005", "tianjin", "no-crlf")}
FULL = {"readings": 200_000, "repeats": 3, "live_s": 60.0, "rate": 5000.0,
        "scaling": ((1_000, 100_000), (10_000, 100_000), (100_000, 100_000)), "hj212": (1_000, 20),
        "hj212_dialects": ("2017", "2025", "2005", "tianjin", "no-crlf", "len+6", "split")}

_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- /proc
def _one_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the service's ingest workers, when it has them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process and its live descendants, in seconds."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            total += _one_cpu_s(p)
        except (OSError, ValueError):
            if p == pid:
                raise
    return total


def proc_peak_rss_mb(pid: int) -> float | None:
    """Sum of the peak RSS of a process and its live descendants."""
    total = None
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total = (total or 0.0) + int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


# --------------------------------------------------------------------------- processes
@dataclass
class Child:
    """A subprocess with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    log_offset: int = 0

    def start(self) -> "Child":
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self, since_start: bool = False) -> str:
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log()[-2000:]}")

    def wait_log(self, text: str, timeout: float = 60.0, count: int = 1) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log(since_start=True).count(text) >= count:
                return time.monotonic()
            self.check_alive()
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: {text!r} not logged within {timeout}s: {self.log()[-2000:]}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                progress(f"{self.name} did not stop on SIGTERM within {timeout:.0f}s; killing it")
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc


def _clean_env() -> dict[str, str]:
    """The caller's environment without any CW_* setting: the bench defines its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CW_")}


def service_child(root: Path, *, mqtt_url: str, influx_url: str, database: str, client_id: str,
                  extra: dict[str, str] | None = None) -> Child:
    root.mkdir(parents=True, exist_ok=True)
    env = _clean_env() | {"CW_MQTT_URL": mqtt_url, "CW_INFLUX_URL": influx_url, "CW_INFLUX_DATABASE": database,
                          "CW_DATA_DIR": str(root / "data"), "CW_MQTT_CLIENT_ID": client_id,
                          "CW_LOG_FORMAT": "text", "CW_LOG_LEVEL": "INFO"} | (extra or {})
    return Child("service", [sys.executable, "-m", "citywatch.cli", "run"], env, root / "service.log")


def baseline_child(root: Path, *, mqtt_url: str, influx_url: str, database: str, client_id: str) -> Child:
    root.mkdir(parents=True, exist_ok=True)
    return Child("baseline", [sys.executable, "-m", "devtools.baseline", "--mqtt-url", mqtt_url,
                              "--influx-url", influx_url, "--database", database, "--client-id", client_id],
                 _clean_env(), root / "baseline.log")


def drop_session(mqtt_url: str, client_id: str, ca_file: str | None = None) -> None:
    """Delete a persistent session (connect with clean start, disconnect): once measured, a
    subscriber's offline session would make the broker queue every later message for it,
    which slows the broker for the runs that follow."""
    import paho.mqtt.client as mqtt

    from citywatch.settings import MqttAddress

    a = MqttAddress.parse(mqtt_url)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if a.username:
        c.username_pw_set(a.username, a.password)
    if a.tls:
        c.tls_set(ca_certs=ca_file)
    try:
        c.connect(a.host, a.port, clean_start=True)
        c.loop_start()
        deadline = time.monotonic() + 10
        while not c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        c.disconnect()
        c.loop_stop()
    except OSError as exc:
        progress(f"could not drop the session {client_id}: {exc}")


def create_session(child: Child) -> None:
    """Start a subscriber once so the broker keeps its persistent session, then stop it."""
    child.start()
    try:
        child.wait_log("connected to broker")
        time.sleep(1.0)  # SUBSCRIBE is sent right after CONNACK; give it time to be processed
    finally:
        child.stop()


# --------------------------------------------------------------------------- messages
@dataclass(frozen=True, slots=True)
class Msg:
    topic: str
    payload: bytes


def _local_iso(dt: datetime) -> str:
    return dt.astimezone(timezone(timedelta(hours=8))).isoformat(timespec="seconds")


def sim_source(*, sites: int, seed: int, start_iso: str, part: tuple[int, int]):
    """Telemetry (not events) of the normal-day scenario, one part of the fleet."""
    from simulators import generate

    for m in generate(SCENARIO, sites=sites, seed=seed, start=start_iso, part=part):
        if m.topic.startswith("telemetry/"):
            yield m


def _payload_pool(seed: int) -> dict[str, list[dict]]:
    pool: dict[str, list[dict]] = {"dust": [], "heating": [], "water": []}
    for m in itertools.islice(sim_source(sites=40, seed=seed, start_iso="2026-01-05T00:00:00", part=(0, 1)), 4000):
        pool[m.topic.split("/")[1]].append(json.loads(m.payload)["values"])
    return pool


def synthetic_source(*, devices: int, seed: int, start_ms: int, part: tuple[int, int]):
    """Many distinct devices fast: values sampled from simulator payloads of the same kind,
    the mix of normal-day (70 % dust, 20 % heating, 10 % water), one reading per device per
    round, 10 s apart. Building 100k simulator device models takes over a minute."""
    pool = _payload_pool(seed)
    kinds = ["dust"] * 7 + ["heating"] * 2 + ["water"]
    k, p = part
    mine = [d for d in range(devices) if d % p == k]
    for r in itertools.count():
        ts = start_ms + r * 10_000
        for d in mine:
            kind = kinds[d % 10]
            values = pool[kind][(d * 7 + r) % len(pool[kind])]
            yield Msg(f"telemetry/{kind}/S{d:06d}/D{d:06d}",
                      json.dumps({"ts": ts + d % 10_000, "seq": r, "values": values}).encode())


def _publish_worker(url: str, client_id: str, source: dict, part: tuple[int, int], count: int,
                    rate: float | None, result, ca_file: str | None = None) -> None:
    """Publish `count` messages of one part (QoS 1) and wait for every PUBACK."""
    try:
        if str(ROOT) not in sys.path:  # a stale editable install can leave `simulators` a namespace package
            sys.path.insert(0, str(ROOT))
        from simulators.publisher import Publisher

        src = dict(source)
        kind = src.pop("type")
        gen = sim_source(part=part, **src) if kind == "sim" else synthetic_source(part=part, **src)
        pub = Publisher(url=url, client_id=client_id, max_inflight=20_000, stall_timeout_s=120, ca_file=ca_file)
        pub.connect()
        t0 = time.monotonic()
        sent = 0
        for m in itertools.islice(gen, count):
            if rate:
                while sent >= (time.monotonic() - t0) * rate:
                    pub.idle(0.002)
            pub.publish(m)
            sent += 1
        pub.flush()
        pub.close()
        result.put((part[0], pub.acked, time.monotonic() - t0, None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        result.put((part[0], 0, 0.0, f"{type(exc).__name__}: {exc}"))


class PublishJob:
    """`processes` worker processes publishing `total` messages between them."""

    def __init__(self, url: str, prefix: str, source: dict, total: int, *, processes: int = 2,
                 rate: float | None = None, ca_file: str | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.result = ctx.Queue()
        self.total = total
        shares = [total // processes + (1 if k < total % processes else 0) for k in range(processes)]
        self.workers = [ctx.Process(target=_publish_worker, daemon=True, name=f"bench-pub-{k}",
                                    args=(url, f"{prefix}-{k}", source, (k, processes), shares[k],
                                          rate / processes if rate else None, self.result, ca_file))
                        for k in range(processes)]

    def start(self) -> "PublishJob":
        for w in self.workers:
            w.start()
        return self

    def wait(self, timeout: float = 600.0) -> tuple[int, float]:
        acked, seconds, errors = 0, 0.0, []
        deadline = time.monotonic() + timeout
        for _ in self.workers:
            _, n, s, err = self.result.get(timeout=max(1.0, deadline - time.monotonic()))
            acked += n
            seconds = max(seconds, s)
            if err:
                errors.append(err)
        self.stop()
        if errors:
            raise RuntimeError("publisher failed: " + "; ".join(errors))
        return acked, seconds

    def stop(self) -> None:
        for w in self.workers:
            w.join(timeout=2)
            if w.is_alive():
                w.terminate()
                w.join(timeout=5)


# --------------------------------------------------------------------------- InfluxDB
class Influx:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30)

    def query(self, db: str, q: str, **params: str) -> list[dict]:
        r = self.http.get(f"{self.url}/query", params={"db": db, "q": q, **params})
        r.raise_for_status()
        return r.json().get("results", [])

    def count_readings(self, db: str) -> int:
        q = ";".join(f'SELECT count("{f}") FROM "{k}" WHERE site != \'{PROBE_SITE}\''
                     for k, f in COUNT_FIELDS.items())
        total = 0
        for res in self.query(db, q):
            for s in res.get("series") or []:
                total += int(s["values"][0][1])
        return total

    def close(self) -> None:
        self.http.close()


# --------------------------------------------------------------------------- capacity
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
                "seconds": _r(self.seconds, 3), "readings_per_s": _r(self.per_s, 0),
                "drain_readings_per_s": _r(self.n / self.drain_seconds if self.drain_seconds else None, 0),
                "cpu_s_per_100k": per100k(self.cpu_s), "peak_rss_mb": _r(self.peak_rss_mb, 1),
                "broker_cpu_s_per_100k": per100k(self.broker_cpu_s),
                "influx_cpu_s_per_100k": per100k(self.influx_cpu_s)}


def _r(v: float | None, nd: int) -> float | None:
    return None if v is None else round(v, nd) if nd else round(v)


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


@dataclass
class Env:
    root: Path
    mosquitto: Mosquitto
    influxd: Influxd
    influx: Influx
    children: list[Child] = field(default_factory=list)
    jobs: list[PublishJob] = field(default_factory=list)
    workers: int = 1  # CW_INGEST_WORKERS of the measured service

    @property
    def server_pids(self) -> tuple[int, int]:
        return self.mosquitto.proc.pid, self.influxd.proc.pid  # type: ignore[union-attr]

    def track(self, child: Child) -> Child:
        self.children.append(child)
        return child


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


# --------------------------------------------------------------------------- live latency
def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))], 1)


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
    start_iso = _local_iso(datetime.now(timezone.utc) - timedelta(days=3))
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
            "p50_ingest_ms": _pct(ingest + ingest_censored, 0.50), "p99_ingest_ms": _pct(ingest + ingest_censored, 0.99),
            "max_ingest_ms": _pct(ingest + ingest_censored, 1.0),
            "p50_alert_ms": _pct(alerts + alert_censored, 0.50), "p99_alert_ms": _pct(alerts + alert_censored, 0.99),
            "max_alert_ms": _pct(alerts + alert_censored, 1.0)}


# --------------------------------------------------------------------------- long outage
def proc_rss_mb(pid: int) -> float:
    """Current RSS (VmRSS) of a process and its live descendants."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def _own_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


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
    from devtools.servers import free_port

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
                     {"type": "sim", "sites": SITES, "seed": 11, "start_iso": _local_iso(start)}, n)
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
        main_rss.append(_own_rss_mb(svc.pid))
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
            "outage_alert_probes": len(alerts), "outage_p50_alert_ms": _pct(alerts, 0.50),
            "outage_p99_alert_ms": _pct(alerts, 0.99), "outage_max_alert_ms": _pct(alerts, 1.0)}


def run_outage_bench(args, n: int) -> int:
    """`citywatch bench --outage N`: a reference capacity run (the normal capacity on this
    box, right now), then the long-outage run."""
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="citywatch-bench-"))
    ref_n = min(n, int(getattr(args, "readings", None) or 200_000))
    progress(f"outage mode, N = {n:,} (reference capacity run: {ref_n:,}); servers and data in {root}")
    env: Env | None = None
    mosq, infl = Mosquitto(root / "mosquitto"), Influxd(root / "influxd")
    try:
        mosq.start()
        infl.start()
        env = Env(root, mosq, infl, Influx(infl.url), workers=int(getattr(args, "workers", None) or 1))
        per_s = SITES * (0.7 / 10 + 0.3 / 60)
        start = datetime.now(timezone.utc) - timedelta(days=30, seconds=ref_n / per_s * 1.2)
        ref, _, _ = capacity_run(env, "ref", ref_n, {"type": "sim", "sites": SITES, "seed": 5,
                                                      "start_iso": _local_iso(start)}, baseline=False)
        drop_session(mosq.url, "bench-svc-ref")
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
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
            progress(f"wrote {args.json}")
        print(outage_markdown(result))
        progress(f"done in {result['bench_seconds']:.0f}s")
        return 0 if result["outage_lost"] == 0 else 1
    finally:
        if env is not None:
            for job in env.jobs:
                job.stop()
            for child in env.children:
                child.stop(timeout=15)
            env.influx.close()
        infl.stop()
        mosq.stop()
        if os.environ.get("CW_BENCH_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            progress(f"kept {root}")


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


# --------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    def version(cmd: list[str]) -> str | None:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return None

    cpu = None
    try:
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "mosquitto": version([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"]),
            "influxd": version([shutil.which("influxd") or "/usr/bin/influxd", "version"])}


def git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def markdown(res: dict[str, Any]) -> str:
    def f(v, unit=""):
        if v is None:
            return "n/a"
        if isinstance(v, float) and not v.is_integer():
            return f"{v:,.1f}{unit}"
        return f"{int(v):,}{unit}"

    rows = [
        ("readings/s (capacity, queued backlog → queryable)", f(res["readings_per_s"]), f(res["baseline_readings_per_s"])),
        ("readings/s after 'connected to broker'", f(res.get("drain_readings_per_s")),
         f(res.get("baseline_drain_readings_per_s"))),
        ("lost (PUBACKed, not in InfluxDB)", f(res["lost"]), f(res.get("baseline_lost"))),
        ("CPU s per 100k readings", f(res["cpu_s_per_100k"]), f(res["baseline_cpu_s_per_100k"])),
        ("peak RSS MB", f(res["peak_rss_mb"]), f(res["baseline_peak_rss_mb"])),
        (f"p50 / p99 ingest ms at {f(res.get('live_offered_target_per_s'))}/s",
         f"{f(res['p50_ingest_ms'])} / {f(res['p99_ingest_ms'])}", "—"),
        ("p50 / p99 alert ms", f"{f(res['p50_alert_ms'])} / {f(res['p99_alert_ms'])}", "—"),
    ]
    if res.get("latency_is_lower_bound"):
        rows.append(("(latency: some probes never arrived; figures are lower bounds)",
                     f"{res['ingest_probes_seen']}/{res['ingest_probes_sent']} seen", "—"))
    out = [f"citywatch bench ({res['mode']}, N = {res['n_readings']:,}, {res['machine']['nproc']} cores, "
           f"commit {res['git_commit']})", "",
           "| figure | citywatch | tutorial baseline |", "|---|---:|---:|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    out.append(f"| vs baseline | {res['vs_baseline']}× | 1× |" if res["vs_baseline"] is not None
               else "| vs baseline | n/a | 1× |")
    if res.get("hj212_readings_per_s") is not None:
        out += ["", f"HJ 212 gateway: {res['hj212_monitors']:,} monitors, {res['hj212_answered']:,} packets answered, "
                f"{f(res['hj212_readings_per_s'])} readings/s into InfluxDB, lost {res['hj212_lost']}"]
        if res.get("hj212_dialects"):
            out += ["", "| HJ 212 dialect | readings | packets | readings/s | readings per CPU-s | lost |",
                    "|---|---:|---:|---:|---:|---:|"]
            out += [f"| {r['dialect']} | {r['readings']:,} | {r['packets']:,} | {f(r['readings_per_s'])} | "
                    f"{f(r['readings_per_cpu_s'])} | {r['lost']} |" for r in res["hj212_dialects"]]
        if res.get("cpu_s_per_100k"):
            out.append(f"One core: MQTT {f(100_000 / res['cpu_s_per_100k'])} readings per CPU-s (service), "
                       f"HJ 212 (2017) {f(res.get('hj212_readings_per_cpu_s'))}")
    if len(res.get("runs", [])) > 1:
        out += ["", "Capacity runs (service / baseline readings/s): " + "; ".join(
            f"{r['service']['readings_per_s']:,} / {r['baseline']['readings_per_s']:,}" for r in res["runs"])]
    if res.get("scaling"):
        out += ["", "| devices | readings | citywatch readings/s | CPU s/100k | peak RSS MB | lost |",
                "|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {s['devices']:,} | {s['n']:,} | {f(s['readings_per_s'])} | {f(s['cpu_s_per_100k'])} | "
                f"{f(s['peak_rss_mb'])} | {s['lost']} |" for s in res["scaling"]]
    return "\n".join(out)


# --------------------------------------------------------------------------- main
def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r[key]["readings_per_s"] or 0)
    return ordered[len(ordered) // 2][key]


def hj212_run(env: "Env", monitors: int, packets_each: int, dialects: tuple[str, ...] = ("2017",)
              ) -> dict[str, Any]:
    """HJ 212 mode: for each dialect in turn, `monitors` TCP connections to the gateway
    inside the service, each sending `packets_each` real-time uploads (answered dialects
    wait for each durable CN=9014; 2005 sends without answers). readings/s = readings
    stored / seconds from the first connection until all are queryable in InfluxDB; CPU =
    the service's (main process and its MQTT child) CPU seconds over that time. The
    top-level figures are the first dialect's (2017), `hj212_dialects` has each."""
    from devtools.servers import free_port
    from ingest.hj212.testing import fleet_registry, run_fleet
    from simulators.hj212 import registry_toml

    import asyncio

    root = env.root / "hj212"
    root.mkdir(parents=True, exist_ok=True)
    registry = fleet_registry(monitors)
    (root / "devices.toml").write_text(registry_toml(registry), encoding="utf-8")
    port = free_port()
    db = "hj212"
    svc = env.track(service_child(root / "service", mqtt_url=env.mosquitto.url, influx_url=env.influxd.url,
                                  database=db, client_id="bench-svc-hj212",
                                  extra={"CW_DEVICES_FILE": str(root / "devices.toml"),
                                         "CW_HJ212_LISTEN": f"127.0.0.1:{port}",
                                         # the whole simulated fleet connects from 127.0.0.1
                                         "CW_HJ212_MAX_PER_ADDRESS": str(max(monitors, 256)),
                                         "CW_INGEST_WORKERS": str(env.workers)}))
    svc.start()
    runs: list[dict[str, Any]] = []

    def count() -> int:
        series = env.influx.query(db, 'SELECT count("pm10") FROM "dust"')
        rows = (series[0].get("series") or [{}])[0].get("values") if series else None
        return int(rows[0][1]) if rows else 0

    try:
        svc.wait_log("HJ 212 gateway listening")
        svc.wait_log("connected to broker")  # the MQTT ingest process has started too: the box is quiet
        stored_before = 0
        for k, dialect in enumerate(dialects):
            progress(f"hj212 {dialect}: {monitors:,} monitors x {packets_each} readings")
            # Each dialect a day earlier than the one before: no point overwrites another's.
            start = datetime.now(timezone.utc) - timedelta(days=k, seconds=30.0 * packets_each + 600)
            assert svc.proc is not None
            cpu0, t0 = proc_cpu_s(svc.proc.pid), time.monotonic()
            result = asyncio.run(run_fleet("127.0.0.1", port, monitors=monitors, packets_each=packets_each,
                                           registry=registry, start=start, dialect=dialect))
            expected = result.sent - len(result.errors)
            counted = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                counted = count() - stored_before
                if counted >= expected:
                    break
                time.sleep(0.1)
            elapsed, cpu_s = time.monotonic() - t0, proc_cpu_s(svc.proc.pid) - cpu0
            stored_before += counted
            runs.append({"dialect": dialect, "readings": result.sent, "packets": result.packets,
                         "answered": result.answered, "stored": counted, "lost": max(0, result.sent - counted),
                         "errors": len(result.errors), "seconds": round(elapsed, 2), "cpu_s": round(cpu_s, 2),
                         "readings_per_s": round(counted / elapsed, 1) if elapsed else None,
                         "readings_per_cpu_s": round(counted / cpu_s, 1) if cpu_s > 0 else None})
    finally:
        svc.stop()
    first = runs[0]
    return {"hj212_monitors": monitors, "hj212_packets": first["packets"], "hj212_answered": first["answered"],
            "hj212_lost": sum(r["lost"] for r in runs), "hj212_errors": sum(r["errors"] for r in runs),
            "hj212_readings_per_s": first["readings_per_s"], "hj212_readings_per_cpu_s": first["readings_per_cpu_s"],
            "hj212_dialects": runs}


def tls_listener(root: Path) -> tuple[str, int, Path]:
    """Certificates made by scripts/make-certs.sh under `root`, and the mosquitto lines of a
    TLS listener on a free loopback port that uses them: (config, port, CA file)."""
    script = ROOT / "scripts" / "make-certs.sh"
    if not script.exists():
        raise SystemExit(f"--tls needs {script} (run the bench from a checkout)")
    certs = root / "certs"
    subprocess.run([str(script), "-o", str(certs), "localhost", "127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    config = (f"listener {port} 127.0.0.1\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n")
    return config, port, certs / "ca.crt"


def run_tls_bench(args) -> int:
    """`citywatch bench --tls`: the same capacity run over plain MQTT and over MQTT with TLS
    (publishers and service verifying the broker's certificate), alternated on one broker
    with both listeners, so that the difference is the cost of TLS."""
    n = int(getattr(args, "readings", None) or QUICK["readings"])
    repeats = 1 if args.quick else 2
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="citywatch-bench-tls-"))
    progress(f"TLS cost, N = {n:,}, {repeats} run(s) per mode; servers and data in {root}")
    config, tls_port, ca_file = tls_listener(root)
    mosq, infl = Mosquitto(root / "mosquitto", extra_config=config), Influxd(root / "influxd")
    env: Env | None = None
    try:
        mosq.start()
        infl.start()
        env = Env(root, mosq, infl, Influx(infl.url), workers=int(getattr(args, "workers", None) or 1))
        urls = {"plain": (mosq.url, None), "tls": (f"mqtts://localhost:{tls_port}", str(ca_file))}
        per_s = SITES * (0.7 / 10 + 0.3 / 60)
        start = datetime.now(timezone.utc) - timedelta(seconds=n / per_s * 1.2 * repeats * 2 + 3600)
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "tls": []}
        for k in range(repeats):
            for mode in ("plain", "tls"):
                url, ca = urls[mode]
                source = {"type": "sim", "sites": SITES, "seed": 1 + k, "start_iso": _local_iso(start)}
                cap, _, _ = capacity_run(env, f"{mode}{k + 1}", n, source, baseline=False, mqtt_url=url, ca_file=ca)
                runs[mode].append(cap.as_dict())
        modes = {mode: _mean_run(rs) for mode, rs in runs.items()}
        plain, tls = modes["plain"], modes["tls"]
        result: dict[str, Any] = {
            "mode": "tls", "n_readings": n, "repeats": repeats, "ingest_workers": env.workers,
            "plain": plain, "tls": tls,
            "tls_vs_plain_readings_per_s": (round(tls["readings_per_s"] / plain["readings_per_s"], 3)
                                            if tls["readings_per_s"] and plain["readings_per_s"] else None),
            "lost": max(r["lost"] for rs in runs.values() for r in rs),
            "extra": max(r["extra"] for rs in runs.values() for r in rs),
            "runs": runs, "machine": machine_info(), "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "bench_seconds": round(time.monotonic() - started, 1),
        }
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
            progress(f"wrote {args.json}")
        print(tls_markdown(result))
        return 0 if result["lost"] == 0 and result["extra"] == 0 else 1
    finally:
        if env is not None:
            for job in env.jobs:
                job.stop()
            for child in env.children:
                child.stop(timeout=15)
            env.influx.close()
        infl.stop()
        mosq.stop()
        if os.environ.get("CW_BENCH_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)


def _mean_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Numbers averaged over runs of one mode; lost and extra the worst."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        if key in ("lost", "extra"):
            out[key] = max(values)
        elif isinstance(value, (int, float)) and all(isinstance(v, (int, float)) for v in values):
            out[key] = round(statistics.fmean(values), 3)
        else:
            out[key] = value
    return out


def tls_markdown(res: dict[str, Any]) -> str:
    rows = ["| MQTT | readings/s | drain readings/s | service CPU s / 100k | broker CPU s / 100k | lost | extra |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for mode in ("plain", "tls"):
        m = res[mode]
        rows.append(f"| {mode} | {m['readings_per_s'] or 0:,.0f} | {m['drain_readings_per_s'] or 0:,.0f} | "
                    f"{m['cpu_s_per_100k']} | {m['broker_cpu_s_per_100k']} | {m['lost']} | {m['extra']} |")
    rows.append(f"\nTLS / plain throughput: {res['tls_vs_plain_readings_per_s']} "
                f"(N = {res['n_readings']:,}, mean of {res['repeats']} per mode, git {res['git_commit']})")
    return "\n".join(rows)


def run_bench(args, settings) -> int:
    if getattr(args, "tls", False):
        return run_tls_bench(args)
    if getattr(args, "outage", None):
        return run_outage_bench(args, int(args.outage))
    plan = dict(QUICK if args.quick else FULL)
    n = int(getattr(args, "readings", None) or plan["readings"])
    mode = "quick" if args.quick else "full"
    live_s = float(os.environ.get("CW_BENCH_LIVE_S", plan["live_s"]))
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="citywatch-bench-"))
    progress(f"{mode} mode, N = {n:,}; servers and data in {root}")
    env: Env | None = None
    mosq, infl = Mosquitto(root / "mosquitto"), Influxd(root / "influxd")
    try:
        mosq.start()
        infl.start()
        env = Env(root, mosq, infl, Influx(infl.url), workers=int(getattr(args, "workers", None) or 1))
        # Capacity fleet: normal-day, 200 sites, timestamps ending an hour before now.
        per_s = SITES * (0.7 / 10 + 0.3 / 60)
        start = datetime.now(timezone.utc) - timedelta(seconds=n / per_s * 1.2 + 3600)
        runs = []
        svc_child = None
        for k in range(plan["repeats"]):
            last = k == plan["repeats"] - 1
            source = {"type": "sim", "sites": SITES, "seed": 1 + k, "start_iso": _local_iso(start)}
            svc_cap, base_cap, child = capacity_run(env, f"run{k + 1}", n, source, keep_service=last)
            if last:
                svc_child = child
            runs.append({"service": svc_cap.as_dict(), "baseline": base_cap.as_dict() if base_cap else None})
        svc = _median_run(runs, "service")
        base = _median_run(runs, "baseline")
        assert svc_child is not None
        live = live_latency(env, f"cw_run{plan['repeats']}", seconds=live_s, rate=plan["rate"], tag="live")
        svc_child.stop()
        drop_session(env.mosquitto.url, f"bench-svc-run{plan['repeats']}")
        hj = hj212_run(env, *plan["hj212"], dialects=plan["hj212_dialects"])
        scaling = []
        for devices, n_scale in plan["scaling"]:
            progress(f"scaling: {devices:,} devices, {n_scale:,} readings")
            source = {"type": "synthetic", "devices": devices, "seed": 3,
                      "start_ms": int((time.time() - 30 * 86400) * 1000)}
            cap, _, _ = capacity_run(env, f"scale{devices}", n_scale, source, baseline=False)
            d = cap.as_dict()
            scaling.append({"devices": devices, **{k: d[k] for k in ("n", "readings_per_s", "drain_readings_per_s",
                                                                     "cpu_s_per_100k", "peak_rss_mb", "lost",
                                                                     "extra")}})
        result: dict[str, Any] = {
            "mode": mode, "n_readings": n, "repeats": plan["repeats"], "ingest_workers": env.workers,
            "readings_per_s": svc["readings_per_s"], "drain_readings_per_s": svc["drain_readings_per_s"],
            "lost": max(r["service"]["lost"] for r in runs), "extra": max(r["service"]["extra"] for r in runs),
            "baseline_readings_per_s": base["readings_per_s"],
            "baseline_drain_readings_per_s": base["drain_readings_per_s"],
            "baseline_lost": max(r["baseline"]["lost"] for r in runs),
            "vs_baseline": (round(svc["readings_per_s"] / base["readings_per_s"], 2)
                            if svc["readings_per_s"] and base["readings_per_s"] else None),
            "cpu_s_per_100k": svc["cpu_s_per_100k"], "peak_rss_mb": svc["peak_rss_mb"],
            "baseline_cpu_s_per_100k": base["cpu_s_per_100k"], "baseline_peak_rss_mb": base["peak_rss_mb"],
            "broker_cpu_s_per_100k": svc["broker_cpu_s_per_100k"], "influx_cpu_s_per_100k": svc["influx_cpu_s_per_100k"],
            **live, **hj,
            "runs": runs, "scaling": scaling,
            "scenario": f"{SCENARIO}, {SITES} sites (140 dust every 10 s, 40 heating + 20 water every 60 s)",
            "machine": machine_info(), "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "bench_seconds": round(time.monotonic() - started, 1),
        }
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
            progress(f"wrote {args.json}")
        print(markdown(result))
        progress(f"done in {result['bench_seconds']:.0f}s")
        return 0 if result["lost"] == 0 and result["extra"] == 0 else 1
    finally:
        if env is not None:
            for job in env.jobs:
                job.stop()
            for child in env.children:
                child.stop(timeout=15)
            env.influx.close()
        infl.stop()
        mosq.stop()
        if os.environ.get("CW_BENCH_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            progress(f"kept {root}")
