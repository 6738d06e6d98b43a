"""`citywatch bench --query`: p50/p99 of each dashboard route at city scale.

    citywatch bench --query [--sites 1000] [--monitors 1] [--days 365] [--raw-days 1] [--interval 30]
                            [--requests 20] [--json FILE]

In a temp dir it starts its own mosquitto and influxd, then builds the data set:
- raw 30-s points (`--interval`) of every monitor for the last `--raw-days` local days up to
  now (PM10, spray, hoarding, cover and hardening; ten vehicle exits a site and day), and
  the kept six-100 evidence of those days **rebuilt from InfluxDB** (the real path, timed);
- for the rest of the `--days`, the kept evidence written directly (a year of 30-s points
  of 1,000 sites is ~1e10 points: no 2-core box loads that): each site-day is one of 64
  generated day records of the same shape (a full day of PM10 minutes with episodes, spray,
  hoarding, cover), so the store has its real size and the judgement its real work.
Then `citywatch run` (the real service, with the API) and, per route, one cold request
and `--requests` more: the table gives cold, p50, p99 and answer size.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np

from devtools.servers import Influxd, Mosquitto, free_port

TZ = ZoneInfo("Asia/Shanghai")
TOKEN = "bench-viewer-token-000"
EQUIPMENT = '["dust_monitor", "spray_relay", "plate_camera", "wash_sensor", "cover_camera", "hoarding_camera", ' \
            '"hardened_survey"]'
DAY_MS = 86_400_000


def progress(msg: str) -> None:
    print(f"[bench --query] {msg}", file=sys.stderr, flush=True)


def registry_toml(sites: int, monitors: int, interval: int) -> str:
    out = []
    for s in range(1, sites + 1):
        for m in range(monitors):
            out.append(f'[[device]]\nid = "D{s:04d}{m}"\nsite = "S{s:04d}"\nkind = "dust"\n'
                       f'district = "d{s % 10}"\nexpected_interval_s = {interval}\nequipment = {EQUIPMENT}\n')
    return "\n".join(out)


def _site_day_lines(s: int, monitors: int, day_start: int, end_ms: int, interval: int, rnd: random.Random):
    site = f"S{s:04d}"
    episode = rnd.randrange(0, 1380) if rnd.random() < 0.3 else -1  # 30 % of site-days have a PM10 episode
    for m in range(monitors):
        for t in range(day_start + (s * 997) % (interval * 1000), min(end_ms, day_start + DAY_MS), interval * 1000):
            minute = (t - day_start) // 60_000
            pm = 180.0 + rnd.random() * 40 if episode <= minute < episode + 20 else 40 + rnd.random() * 60
            spray = "true" if episode <= minute < episode + 5 else "false"
            yield (f"dust,device=D{s:04d}{m},site={site} pm10={pm:.1f},spray_on={spray},hoarding_intact=true,"
                   f"cover_ratio={100.0 if minute % 97 else 90.0},hardened_ratio=100.0 {t}")
    for k in range(10):
        t = day_start + (8 + k) * 3_600_000
        if t < end_ms:
            yield (f'events,device=D{s:04d}0,kind=dust,site={site},type=vehicle_exit plate="晋A0000{k}",'
                   f"washed=true,wash_seconds={60.0 + k * 3},covered={'false' if k == 9 and s % 5 == 0 else 'true'} {t}")


def load_raw(url: str, db: str, sites: int, monitors: int, days: list[date], interval: int, now_ms: int) -> int:
    rnd, total, lines = random.Random(7), 0, []
    with httpx.Client(base_url=url, timeout=300) as c:
        c.post("/query", data={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()

        def flush() -> None:
            nonlocal total
            if lines:
                c.post("/write", params={"db": db, "precision": "ms"}, content="\n".join(lines).encode()
                       ).raise_for_status()
                total += len(lines)
                lines.clear()

        for d in days:
            start = int(datetime.combine(d, datetime.min.time(), TZ).timestamp() * 1000)
            for s in range(1, sites + 1):
                lines.extend(_site_day_lines(s, monitors, start, now_ms, interval, rnd))
                if len(lines) >= 50_000:
                    flush()
            progress(f"raw {d}: {total:,} points so far")
        flush()
    return total


def day_pool(n: int = 64) -> list[Any]:
    """Generated kept day records (ingest.evidence.DayFacts) of one site's UTC day."""
    from ingest.evidence.store import DayFacts

    rng = np.random.default_rng(3)
    out = []
    for k in range(n):
        f = DayFacts()
        c = f.cols
        c["pm10"][:] = np.round(40 + rng.random(1440) * 60, 2)
        c["spray_n"][:] = 2
        if k % 3 == 0:
            e = int(rng.integers(0, 1380))
            c["pm10"][e:e + 20] = 180 + rng.random(20) * 40
            c["spray_true"][e:e + (5 if k % 2 else 20)] = 2
        c["hoarding_n"][:] = 2
        for name in ("cover_ratio", "hardened_ratio"):
            c[f"{name}_n"][:] = 2
            c[f"{name}_s"][:] = 200.0
            c[f"{name}_lo"][:] = 100.0
        c["cover_ratio_lo"][::97] = 90.0
        if k % 7 == 0:
            c["pm10"][600:660] = np.nan  # an hour offline
        out.append(f)
    return out


def fill_kept(store: Any, sites: int, utc_days: list[int]) -> None:
    """Every site's UTC days, each one of the pool's records with that day's vehicle exits."""
    pool = day_pool()
    for i, day in enumerate(utc_days):
        blobs = []
        for k, f in enumerate(pool):
            f.exits = [[day + h * 3_600_000, True, 60.0 + h, k % 5 != 0 or h != 9] for h in range(2, 12)]
            blobs.append(f.encode())
        store.put_days([(day, f"S{s:04d}", blobs[(s * 31 + i) % len(blobs)]) for s in range(1, sites + 1)],
                       rebuilt_days=[day])
        if i % 30 == 0:
            progress(f"kept evidence: {i + 1}/{len(utc_days)} UTC days")


def wait_warm(base: str, service: subprocess.Popen) -> float:
    """Seconds until the service's first six-100 warm-up pass is done (api/warm.py: every
    covered day back to last month judged), read from /metrics; the routes are measured
    after it, as a service that has been running answers."""
    t = time.monotonic()
    while service.poll() is None:
        text = httpx.get(f"{base}/metrics", timeout=30).text
        done = [ln for ln in text.splitlines() if ln.startswith("citywatch_six100_warm_passes_total ")]
        if done and float(done[0].split()[1]) >= 1:
            took = time.monotonic() - t
            progress(f"six-100 warm-up done {took:.0f} s after the service answered")
            return round(took, 1)
        time.sleep(1)
    raise RuntimeError("service exited during the six-100 warm-up")


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q / 100 * len(v) + 0.5)) - 1))]


def measure(base: str, routes: list[tuple[str, str, dict]], n: int) -> list[dict[str, Any]]:
    out = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, timeout=600, headers=headers) as c:
        for name, path, params in routes:
            times = []
            size = 0
            for k in range(n + 1):
                t = time.perf_counter()
                r = c.get(path, params=params)
                times.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{path} {params}: {r.status_code} {r.text[:300]}")
                size = len(r.content)
            warm = times[1:]
            out.append({"route": name, "path": path, "params": params, "cold_ms": round(times[0], 1),
                        "p50_ms": round(statistics.median(warm), 1), "p99_ms": round(_pct(warm, 99), 1),
                        "n": len(warm), "bytes": size})
            progress(f"{name}: cold {times[0]:.0f} ms, p50 {out[-1]['p50_ms']:.0f} ms, p99 {out[-1]['p99_ms']:.0f} ms")
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"citywatch bench --query: {res['sites']:,} sites × {res['monitors']} monitor(s), {res['days']} days of "
             f"kept evidence ({res['kept_mb']:.0f} MB store), raw {res['interval_s']}-s points of the last "
             f"{res['raw_days']} day(s) ({res['raw_points']:,} points)"
             + (f"; measured after the six-100 warm-up ({res['warm_up_s']:.0f} s after start)"
                if res.get("warm_up_s") is not None else ""), "",
             "| route | cold ms | p50 ms | p99 ms | answer KB |", "|---|---|---|---|---|"]
    for r in res["routes"]:
        lines.append(f"| {r['route']} | {r['cold_ms']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
                     f"{r['bytes'] / 1024:.0f} |")
    lines.append("")
    lines.append(f"rebuild from InfluxDB: {res['rebuild_s']:.1f} s for {res['raw_points']:,} points "
                 f"({res['rebuild_points_per_s']:,.0f} points/s); n = {res['requests']} warm requests per route")
    return "\n".join(lines)


def run_query_bench(args: Any) -> int:
    sites, monitors = int(args.sites or 1000), int(args.monitors or 1)
    days, raw_days, interval = int(args.days or 365), int(args.raw_days), int(args.interval or 30)
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="citywatch-qbench-"))
    mosq, infl = Mosquitto(root / "mosquitto"), Influxd(root / "influxd")
    service: subprocess.Popen | None = None
    try:
        mosq.start()
        infl.start()
        data = root / "data"
        data.mkdir()
        devices = root / "devices.toml"
        devices.write_text(registry_toml(sites, monitors, interval), "utf-8")
        now = datetime.now(TZ)
        now_ms = int(now.timestamp() * 1000)
        today = now.date()
        raw = [today - timedelta(days=k) for k in range(raw_days - 1, -1, -1)]  # --raw-days 0: kept only
        t = time.monotonic()
        points = load_raw(infl.url, "cw", sites, monitors, raw, interval, now_ms)
        load_s = time.monotonic() - t
        progress(f"{points:,} raw points in {load_s:.0f} s")

        from citywatch.influx import InfluxClient
        from citywatch.settings import Settings
        from ingest.evidence import EvidenceKeeper, EvidenceStore, evidence_path

        store = EvidenceStore(evidence_path(data))
        raw_start = int(datetime.combine(raw[0] if raw else today + timedelta(days=1), datetime.min.time(),
                                         TZ).timestamp() * 1000)
        first = int(datetime.combine(today - timedelta(days=days - 1), datetime.min.time(), TZ).timestamp() * 1000)
        raw_end = int(datetime.combine(today + timedelta(days=1), datetime.min.time(), TZ).timestamp() * 1000)
        utc_old = list(range(first - first % DAY_MS, raw_start - raw_start % DAY_MS + (0 if raw else DAY_MS), DAY_MS))
        fill_kept(store, sites, utc_old)

        async def rebuild() -> None:
            influx = InfluxClient(Settings(influx_url=infl.url, influx_database="cw", data_dir=data))
            try:
                # up to the end of today: the UTC day still to come is covered from the start
                await EvidenceKeeper(store, influx).rebuild(raw_start, raw_end)
            finally:
                await influx.aclose()

        t = time.monotonic()
        if raw:
            asyncio.run(rebuild())
        rebuild_s = time.monotonic() - t
        kept_mb = store.size_bytes() / 1e6
        store.close()
        progress(f"kept evidence rebuilt from InfluxDB in {rebuild_s:.0f} s; store {kept_mb:.0f} MB")

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CW_")} | {
            "CW_MQTT_URL": mosq.url, "CW_INFLUX_URL": infl.url, "CW_INFLUX_DATABASE": "cw", "CW_DATA_DIR": str(data),
            "CW_DEVICES_FILE": str(devices), "CW_API_TOKENS": f"{TOKEN}=viewer", "CW_API_PORT": str(port),
            "CW_LOG_FORMAT": "text"}
        log = open(root / "service.log", "ab")
        service = subprocess.Popen([sys.executable, "-m", "app.cli", "run"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start: {(root / 'service.log').read_text()[-2000:]}")
            time.sleep(0.2)
        warm_s = wait_warm(base, service) if getattr(args, "warm_first", True) else None
        yesterday = today - timedelta(days=1)
        last_month = (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
        old_day = (today - timedelta(days=days // 2)).isoformat()
        routes = [
            ("health", "/health", {}),
            ("readings latest (all dust)", "/v1/readings/latest", {"kind": "dust"}),
            ("series PM10 24 h (one site)", "/v1/series", {"kind": "dust", "site": "S0001", "field": "pm10"}),
            ("alerts active", "/v1/alerts", {"state": "active"}),
            ("six-100 day, all sites (today)", "/v1/compliance/six100", {}),
            ("six-100 day, all sites (yesterday)", "/v1/compliance/six100", {"date": yesterday.isoformat()}),
            (f"six-100 day, all sites ({old_day})", "/v1/compliance/six100", {"date": old_day}),
            ("six-100 day, one site", "/v1/compliance/six100", {"date": yesterday.isoformat(), "site": "S0001"}),
            ("six-100 month, all sites (this month)", "/v1/compliance/six100/month", {}),
            (f"six-100 month, all sites ({last_month})", "/v1/compliance/six100/month", {"month": last_month}),
            ("six-100 month, one site", "/v1/compliance/six100/month", {"month": last_month, "site": "S0001"}),
        ]
        results = measure(base, routes, int(args.requests or 20))
        res = {"mode": "query", "sites": sites, "monitors": monitors, "days": days, "raw_days": raw_days,
               "interval_s": interval, "raw_points": points, "raw_load_s": round(load_s, 1),
               "rebuild_s": round(rebuild_s, 1), "rebuild_points_per_s": round(points / max(rebuild_s, 1e-9)),
               "warm_up_s": warm_s, "kept_mb": round(kept_mb, 1), "kept_utc_days": len(utc_old), "requests": int(args.requests or 20),
               "routes": results, "date": datetime.now(TZ).isoformat(timespec="seconds"),
               "nproc": os.cpu_count(), "load_avg": os.getloadavg(),
               "bench_seconds": round(time.monotonic() - started, 1)}
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
        print(markdown(res))
        return 0
    finally:
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
        infl.stop()
        mosq.stop()
        if os.environ.get("CW_BENCH_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            progress(f"kept {root}")
