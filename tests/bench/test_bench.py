"""`citywatch bench --quick` end to end with a small N: real mosquitto and influxd (the
bench starts its own), the service and the tutorial baseline as subprocesses.

Only the shape and the correctness figures are asserted (every key present, nothing lost,
both pipelines drained); no wall-clock threshold, the machine is shared.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

KEYS = ("readings_per_s", "lost", "baseline_readings_per_s", "p50_ingest_ms", "p99_ingest_ms", "p50_alert_ms",
        "p99_alert_ms", "cpu_s_per_100k", "peak_rss_mb", "baseline_cpu_s_per_100k", "baseline_peak_rss_mb",
        "vs_baseline", "n_readings", "mode", "machine", "git_commit")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.skipif(not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())
                    or not (shutil.which("influxd") or Path("/usr/bin/influxd").exists()),
                    reason="needs mosquitto and influxd")
@pytest.mark.timeout(180)
def test_quick_bench_small_n(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env_live = {"CW_BENCH_LIVE_S": "4"}
    import os

    proc = subprocess.run([sys.executable, "-m", "app.cli", "bench", "--quick", "--readings", "20000",
                           "--json", str(out)], cwd=ROOT, env={**os.environ, **env_live},
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    missing = [k for k in KEYS if k not in res]
    assert not missing, missing
    assert res["mode"] == "quick"
    assert res["n_readings"] == 20000
    assert res["lost"] == 0 and res["extra"] == 0
    assert res["baseline_lost"] == 0
    assert res["readings_per_s"] > 0
    assert res["baseline_readings_per_s"] > 0
    assert isinstance(res["p99_ingest_ms"], (int, float)) and math.isfinite(res["p99_ingest_ms"])
    assert res["p50_ingest_ms"] <= res["p99_ingest_ms"]
    # The alert figure is a number when alerts arrived, null (never made up) when none did.
    assert res["p99_alert_ms"] is None or res["p99_alert_ms"] >= 0
    assert res["cpu_s_per_100k"] > 0 and res["peak_rss_mb"] > 0
    assert res["machine"]["nproc"] >= 1 and res["machine"]["python"]
    # The markdown table goes to stdout, progress to stderr.
    assert "| readings/s" in proc.stdout and "vs baseline" in proc.stdout
    assert "[bench" in proc.stderr


@pytest.mark.skipif(not (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())
                    or not (shutil.which("influxd") or Path("/usr/bin/influxd").exists()),
                    reason="needs mosquitto and influxd")
@pytest.mark.timeout(300)
def test_outage_bench_small_n(tmp_path: Path) -> None:
    """`--outage N`: N readings spooled with influxd stopped, then drained; nothing lost."""
    import os

    out = tmp_path / "outage.json"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "bench", "--outage", "20000", "--readings",
                           "10000", "--json", str(out)], cwd=ROOT, env=dict(os.environ), capture_output=True,
                          text=True, timeout=290)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "outage" and res["outage_n"] == 20000
    assert res["outage_lost"] == 0 and res["outage_extra"] == 0 and res["outage_counted"] == 20000
    assert res["outage_drain_readings_per_s"] > 0 and res["reference_drain_readings_per_s"] > 0
    assert res["outage_peak_rss_mb_during_drain"] >= res["outage_rss_mb_first_half_max"] > 0
    assert res["outage_alert_probes"] > 0 and res["outage_p99_alert_ms"] is not None
    assert "| drain (readings/s)" in proc.stdout
