"""The standard run (`citywatch bench [--quick]`): capacity of the service and the tutorial
baseline on the same queued readings, live latency, HJ 212, and (full run) scaling."""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from devtools.bench.capacity import capacity_run
from devtools.bench.common import FULL, QUICK, SCENARIO, SITES, local_iso, progress
from devtools.bench.env import bench_env
from devtools.bench.hj212 import hj212_run
from devtools.bench.live import live_latency
from devtools.bench.procs import drop_session
from devtools.bench.report import emit, git_commit, machine_info, markdown


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r[key]["readings_per_s"] or 0)
    return ordered[len(ordered) // 2][key]


def run_standard_bench(args: argparse.Namespace) -> int:
    """`citywatch bench [--quick]`: capacity runs of the service and the baseline, the live
    latency on the last run's service, HJ 212, the scaling table (full run only)."""
    plan = dict(QUICK if args.quick else FULL)
    n = int(getattr(args, "readings", None) or plan["readings"])
    mode = "quick" if args.quick else "full"
    live_s = float(os.environ.get("CW_BENCH_LIVE_S", plan["live_s"]))
    started = time.monotonic()
    with bench_env(f"{mode} mode, N = {n:,}", workers=int(getattr(args, "workers", None) or 1)) as env:
        # Capacity fleet: normal-day, 200 sites, timestamps ending an hour before now.
        per_s = SITES * (0.7 / 10 + 0.3 / 60)
        start = datetime.now(timezone.utc) - timedelta(seconds=n / per_s * 1.2 + 3600)
        runs = []
        svc_child = None
        for k in range(plan["repeats"]):
            last = k == plan["repeats"] - 1
            source = {"type": "sim", "sites": SITES, "seed": 1 + k, "start_iso": local_iso(start)}
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
        emit(args, result, markdown(result))
        progress(f"done in {result['bench_seconds']:.0f}s")
        return 0 if result["lost"] == 0 and result["extra"] == 0 else 1
