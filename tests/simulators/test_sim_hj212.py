"""`citywatch simulate --protocol hj212` against the real gateway in the real service."""

from __future__ import annotations

import subprocess
import sys

import pytest

from citywatch.servers import free_port
from tests.support import ROOT, ServiceProcess, service_env, wait_count

pytestmark = pytest.mark.integration


def test_simulated_hj212_fleet_reaches_influxdb(mosquitto, influxd, tmp_path):
    registry = tmp_path / "devices.toml"
    cli = [sys.executable, "-m", "citywatch.cli", "simulate", "--protocol", "hj212", "--sites", "50"]
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
    svc.stop()
