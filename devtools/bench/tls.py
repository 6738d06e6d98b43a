"""`citywatch bench --tls`: the cost of TLS, the same capacity run over plain MQTT and over
MQTT with TLS on one broker with both listeners."""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from devtools.bench.capacity import capacity_run
from devtools.bench.common import QUICK, SITES, local_iso
from devtools.bench.env import bench_env
from devtools.bench.report import emit, git_commit, machine_info


def run_tls_bench(args: argparse.Namespace) -> int:
    """`citywatch bench --tls`: the same capacity run over plain MQTT and over MQTT with TLS
    (publishers and service verifying the broker's certificate), alternated on one broker
    with both listeners, so that the difference is the cost of TLS."""
    n = int(getattr(args, "readings", None) or QUICK["readings"])
    repeats = 1 if args.quick else 2
    started = time.monotonic()
    title = f"TLS cost, N = {n:,}, {repeats} run(s) per mode"
    with bench_env(title, workers=int(getattr(args, "workers", None) or 1), tls=True,
                   prefix="citywatch-bench-tls-") as env:
        urls = {"plain": (env.mosquitto.url, None), "tls": (env.tls_url, env.ca_file)}
        per_s = SITES * (0.7 / 10 + 0.3 / 60)
        start = datetime.now(timezone.utc) - timedelta(seconds=n / per_s * 1.2 * repeats * 2 + 3600)
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "tls": []}
        for k in range(repeats):
            for mode in ("plain", "tls"):
                url, ca = urls[mode]
                source = {"type": "sim", "sites": SITES, "seed": 1 + k, "start_iso": local_iso(start)}
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
        emit(args, result, tls_markdown(result))
        return 0 if result["lost"] == 0 and result["extra"] == 0 else 1


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
