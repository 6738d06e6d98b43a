"""`citywatch simulate --protocol hj212` against the real gateway in the real service."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devtools.servers import free_port
from tests.support import ROOT, ServiceProcess, service_env, wait_count

pytestmark = pytest.mark.integration


def test_simulated_hj212_fleet_reaches_influxdb(mosquitto, influxd, tmp_path):
    registry = tmp_path / "devices.toml"
    cli = [sys.executable, "-m", "app.cli", "simulate", "--protocol", "hj212", "--sites", "50"]
    out = subprocess.run(cli + ["--write-registry", str(registry), "--packets", "0"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert "wrote the fleet's registry" in out.stdout and registry.read_text().count("[[device]]") == 50
    port = free_port()
    env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=tmp_path / "cw", database="simhj",
                      devices_file=str(registry), hj212_listen=f"127.0.0.1:{port}")
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("HJ 212 gateway listening")
    run = subprocess.run(cli + ["--packets", "4"], cwd=ROOT, env=svc.env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "sent 200 packets, 200 answered" in run.stdout
    assert wait_count(influxd.url, "simhj", 200) == 200
    # --dialect: the same fleet as other monitors speak (each run on its own day: no overwrites)
    total = 200
    for day, (dialect, packets) in enumerate([("2005", 200), ("tianjin", 200), ("split", 400), ("no-crlf", 200)], 1):
        run = subprocess.run(cli + ["--packets", "4", "--dialect", dialect, "--start", f"2026-11-{day:02d}T08:00:00"],
                             cwd=ROOT, env=svc.env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"hj212 ({dialect}): 50 monitors, sent {packets} packets" in run.stdout
        assert ("no answers" in run.stdout) == (dialect == "2005")
        total += 200
        assert wait_count(influxd.url, "simhj", total) == total, dialect
    bad = subprocess.run(cli + ["--packets", "1", "--dialect", "klingon"], cwd=ROOT, env=svc.env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--dialect must be one of" in bad.stdout
    svc.stop()
