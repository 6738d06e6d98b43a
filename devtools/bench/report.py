"""The benchmark's report: the machine and commit it ran on, the markdown table on stdout,
the JSON file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from devtools.bench.common import ROOT, progress


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


def emit(args: argparse.Namespace, result: dict[str, Any], table: str) -> None:
    """The figures as JSON to `--json FILE` (when given) and the table to stdout."""
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        progress(f"wrote {args.json}")
    print(table)
