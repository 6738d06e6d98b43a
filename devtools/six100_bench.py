"""Time the all-sites six-100 day against a fresh influxd with synthetic dust data.

    .venv/bin/python -m devtools.six100_bench [--sites 50] [--monitors 2] [--interval 30] [--runs 5]

Prints the median of `api.compliance.six100` for one local day over every site. Run it with
PYTHONPATH=<another tree> to time that tree's judgement on the same data (the same
`six100()` keywords, `rules=` when the tree has them)."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import statistics
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from citywatch.influx import InfluxClient
from devtools.servers import Influxd
from citywatch.settings import Settings

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 11, 20)


def load(url: str, sites: int, monitors: int, interval_s: int) -> int:
    httpx.post(f"{url}/query", data={"q": 'CREATE DATABASE "bench"'}).raise_for_status()
    t0 = int(datetime.combine(DAY, datetime.min.time(), TZ).timestamp() * 1000)
    rnd, lines, total = random.Random(1), [], 0
    for s in range(sites):
        for d in range(monitors):
            for i in range(86_400 // interval_s):
                pm = rnd.uniform(40, 260)
                flag = ',pm10_flag="N"' if d % 2 == 0 else ""  # half HJ 212 (flagged), half MQTT
                lines.append(f"dust,site=S{s:04d},device=D{s:04d}{d} pm10={pm:.1f}{flag},pm25={pm * 0.5:.1f},"
                             f"spray_on={'true' if rnd.random() < 0.5 else 'false'},hoarding_intact=true,"
                             f"cover_ratio=100,hardened_ratio=100 {t0 + i * interval_s * 1000}")
                if len(lines) >= 20_000:
                    total += _write(url, lines)
    return total + _write(url, lines)


def _write(url: str, lines: list[str]) -> int:
    n = len(lines)
    if n:
        httpx.post(f"{url}/write", params={"db": "bench", "precision": "ms"}, content="\n".join(lines).encode(),
                   timeout=120).raise_for_status()
        lines.clear()
    return n


async def measure(url: str, runs: int) -> tuple[int, list[float]]:
    from api import compliance

    influx = InfluxClient(Settings(influx_url=url, influx_database="bench"))
    kw = dict(day=DAY, tz=TZ, now_ms=4_102_444_800_000, site=None, registry=None, max_sites=100_000)
    if "rules" in inspect.signature(compliance.six100).parameters:
        from alerts.rules import load_rules
        from api.six100 import item_rules

        kw["rules"] = item_rules(load_rules())
    times, n = [], 0
    try:
        for _ in range(runs):
            t = time.perf_counter()
            n = len(await compliance.six100(influx, **kw))
            times.append(time.perf_counter() - t)
    finally:
        await influx.aclose()
    return n, times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sites", type=int, default=50)
    p.add_argument("--monitors", type=int, default=2, help="per site")
    p.add_argument("--interval", type=int, default=30, help="seconds between readings")
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Influxd(Path(tmp)) as server:
        points = load(server.url, a.sites, a.monitors, a.interval)
        n, times = asyncio.run(measure(server.url, a.runs))
        print(f"{points} points, {n} sites: all-sites day median {statistics.median(times):.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
