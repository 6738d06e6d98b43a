"""Start-up configuration of the HJ 212 gateway: no monitor without a password unless the
registry says so, no registry-less gateway unless open mode is asked for (exit 2, one line)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citywatch.errors import ConfigError
from citywatch.registry import Registry
from devtools.servers import free_port
from citywatch.settings import Settings
from tests.hj212.samples import REALTIME

ROOT = Path(__file__).resolve().parents[2]
DEVICE = '[[device]]\nid = "D00001"\nsite = "S0001"\nkind = "dust"\nhj212_mn = "4A4300000000000000D00001"\n'


def citywatch(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CW_")}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**clean, "CW_DATA_DIR": str(tmp_path / "cw"),
                                           "CW_MQTT_URL": "mqtt://127.0.0.1:9", "CW_INFLUX_URL": "http://127.0.0.1:9",
                                           **env})


def test_a_monitor_without_a_password_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(DEVICE)
    with pytest.raises(ConfigError, match=r"device 'D00001' has hj212_mn but no hj212_pw: add hj212_pw = .*"
                                          r"or hj212_pw_none = true"):
        Registry.load(path)
    path.write_text(DEVICE + "hj212_pw_none = true\n")
    assert Registry.load(path).by_mn["4A4300000000000000D00001"].hj212_pw is None  # on purpose
    path.write_text(DEVICE + 'hj212_pw = "x"\nhj212_pw_none = true\n')
    with pytest.raises(ConfigError, match="keep one"):
        Registry.load(path)
    path.write_text(DEVICE + 'hj212_pw = ""\n')
    with pytest.raises(ConfigError, match="hj212_pw must be a non-empty string"):
        Registry.load(path)


def test_run_exits_2_with_one_line_naming_the_device_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(DEVICE)
    out = citywatch(["run"], tmp_path, CW_DEVICES_FILE=str(path))
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert "D00001" in line and "hj212_pw" in line and "hj212_pw_none = true" in line


@pytest.mark.parametrize("args", [["run"], ["hj212", "--listen", "127.0.0.1:9"]])
def test_a_gateway_without_a_registry_needs_open_mode(tmp_path: Path, args: list[str]) -> None:
    out = citywatch(args, tmp_path, CW_HJ212_LISTEN="127.0.0.1:9")
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert "CW_DEVICES_FILE" in line and "CW_HJ212_OPEN=true" in line


def test_open_mode_accepts_any_monitor(tmp_path: Path) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CW_")}
    env = {**clean, "CW_DATA_DIR": str(tmp_path / "cw"), "CW_INFLUX_URL": "http://127.0.0.1:9",
           "CW_HJ212_OPEN": "true", "CW_LOG_FORMAT": "text"}
    log = tmp_path / "gw.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "hj212", "--listen", f"127.0.0.1:{port}"],
                                cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "HJ 212 gateway listening" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(REALTIME)
            assert b"CN=9014" in s.recv(4096)  # no registry: any MN, no PW check
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.mark.parametrize("name,value", [("CW_HJ212_MAX_PER_ADDRESS", "0"), ("CW_HJ212_AUTH_TIMEOUT_S", "-1"),
                                        ("CW_HJ212_LOCKOUT_AFTER", "0"), ("CW_HJ212_DEADLETTER_RATE", "0")])
def test_settings_are_validated(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):  # the line names the CW_ variable
        Settings.load()
