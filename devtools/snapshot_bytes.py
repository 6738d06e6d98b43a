"""Bytes the alert engine's state snapshot writes per second, for a fleet with full windows:
`python devtools/snapshot_bytes.py [--sites 200] [--mode buckets|raw|off]`.

The fleet is the simulators' `normal-day` one (200 sites: 140 dust monitors every 10 s,
heating and water every 60 s; one decoded reading per device as the template, values
jittered). The engine is built as the service builds it. It is fed `--hours` of event time
without snapshots (the 24 h windows fill), then `--measure-s` seconds in 5-s steps with a
snapshot after each step, as the engine's timer does every 5 s. Reported per second of
event time: the bytes the process handed to write() during the snapshots (`wchar` of
/proc/self/io: SQLite's WAL frames and checkpoints) and the blob bytes of the rows.

Modes: `buckets` (this tree: windows over 1 h as minute buckets), `raw` (every window
raw, as before alerts/buckets.py, with the GB 3095 24-h rules on), `off` (raw, and the two
24-h rules off: the shipped default before they were turned on).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

import yaml

from alerts import plan
from alerts.rules import DEFAULT_RULES_DIR
from alerts.perf import _Batch, _NullSink, fleet_stream
from citywatch.model import Reading
from citywatch.settings import Settings


def _wchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def measure(sites: int, hours: float, measure_s: int, mode: str) -> dict:
    from alerts.build import build_alerting

    readings, _, registry = fleet_stream("normal-day", sites, sites * 3, 7, "2026-11-27T05:00:00")
    templates: dict[str, Reading] = {}
    for r in readings:
        templates.setdefault(r.device, r)
    if mode != "buckets":
        plan.bucketed = lambda agg, window_ms: False  # every window raw, as before buckets
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="cw-snapbytes-") as tmp:
        if mode == "off":
            rules = Path(tmp) / "rules"
            rules.mkdir()
            docs = yaml.safe_load((DEFAULT_RULES_DIR / "dust.yaml").read_text("utf-8"))["rules"]
            off = [{**d, "enabled": False} for d in docs if d["id"] in ("dust_pm25_24h", "dust_tsp_24h")]
            (rules / "off.yaml").write_text(yaml.safe_dump({"rules": off}, allow_unicode=True), "utf-8")
            os.environ["CW_RULES_DIR"] = str(rules)
        settings = Settings(data_dir=Path(tmp) / "data")
        engine, tasks = build_alerting(settings, registry=registry, sink=_NullSink(), mqtt=False)
        for coro in tasks:
            coro.close()
        t0 = min(r.ts_ms for r in templates.values())
        devs = sorted(templates.values(), key=lambda r: r.device)
        interval = {r.device: int(registry.get(r.device).expected_interval_s * 1000) for r in devs}

        def step(t: int) -> None:  # the readings due in (t - 5 s, t]
            batch = []
            for i, r in enumerate(devs):
                every = interval[r.device]
                phase = (i * 5000) % every
                if (t - phase) % every < 5000:
                    vals = {k: (v * (1 + rng.uniform(-0.05, 0.05)) if isinstance(v, float) else v)
                            for k, v in r.values.items()}
                    batch.append(Reading(r.kind, r.site, r.device, t, vals))
            engine.process(_Batch(batch, []))

        end_fill = t0 + int(hours * 3600_000)
        t = t0
        while t < end_fill:
            step(t)
            t += 5000
        engine.snapshot()
        blobs = 0
        store_tx = engine.store.transaction

        def counting_tx():  # count the rows' blob bytes as they go in
            tx = store_tx()
            put_series, put_buckets = tx.put_series, getattr(tx, "put_series_buckets", None)

            def ps(device, fld, ts, v):
                nonlocal blobs
                blobs += len(ts) + len(v)
                put_series(device, fld, ts, v)

            def pb(device, fld, hours_, drop):
                nonlocal blobs
                blobs += sum(len(d) for _, d in hours_)
                put_buckets(device, fld, hours_, drop)
            tx.put_series = ps
            if put_buckets is not None:
                tx.put_series_buckets = pb
            return tx
        engine.store.transaction = counting_tx
        written = 0
        for _ in range(measure_s // 5):
            step(t)
            t += 5000
            w = _wchar()
            engine.snapshot()
            written += _wchar() - w
        engine.close()
    return {"mode": mode, "sites": sites, "devices": len(devs), "fill_hours": hours, "measured_s": measure_s,
            "written_bytes_per_s": round(written / measure_s), "blob_bytes_per_s": round(blobs / measure_s)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sites", type=int, default=200)
    p.add_argument("--hours", type=float, default=24.5, help="event time fed first (the 24 h windows fill)")
    p.add_argument("--measure-s", type=int, default=60, help="event seconds measured (a snapshot every 5 s)")
    p.add_argument("--mode", choices=("buckets", "raw", "off"), default="buckets")
    ns = p.parse_args(argv)
    print(json.dumps(measure(ns.sites, ns.hours, ns.measure_s, ns.mode)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
