"""`citywatch run` with an invalid setting: status 2, one line naming the setting (and no
secret), and no process of it left — the check happens before the MQTT ingest child
process is spawned. Table-driven: one row per kind of mistake."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.security.app_helpers import clean_environ

ROOT = Path(__file__).resolve().parents[2]
TOKEN_SECRET = "abc"  # never in the output


def _bad_rules(tmp: Path) -> str:
    d = tmp / "rules"
    d.mkdir()
    (d / "x.yaml").write_text(
        "rules:\n  - id: huge\n    kind: dust\n    severity: major\n    source: test\n"
        "    when: {field: pm10, above: 100}\n"
        "    message: {zh: '{value:>100000000}', en: '{value}'}\n"
        "    action: {zh: 停工, en: stop}\n", "utf-8")
    return str(d)


def _bad_devices(tmp: Path) -> str:
    f = tmp / "devices.toml"
    f.write_text('[[device]]\nid = "bad id!"\nkind = "dust"\nsite = "S1"\n', "utf-8")
    return str(f)


def _misnamed_devices(tmp: Path) -> str:
    f = tmp / "devices.toml"  # [[devices]] instead of [[device]]: silently an empty registry before
    f.write_text('[[devices]]\nid = "D1"\nkind = "dust"\nsite = "S1"\n', "utf-8")
    return str(f)


def _garbage_pem(tmp: Path) -> dict[str, str]:
    (tmp / "cert.pem").write_text("not a certificate")
    (tmp / "key.pem").write_text("not a key")
    return {"CW_API_TLS_CERT": str(tmp / "cert.pem"), "CW_API_TLS_KEY": str(tmp / "key.pem")}


_HELD = socket.socket()  # a port in use for the whole module
_HELD.bind(("127.0.0.1", 0))
_HELD.listen()
HELD_PORT = _HELD.getsockname()[1]

CASES = {
    "short token": ({"CW_API_TOKENS": f"{TOKEN_SECRET}=admin"}, "CW_API_TOKENS"),
    "bad role": ({"CW_API_TOKENS": "long-enough-token-1=root"}, "CW_API_TOKENS"),
    "token without role": ({"CW_API_TOKENS": "long-enough-token-1"}, "CW_API_TOKENS"),
    "bad influx url": ({"CW_INFLUX_URL": "ftp://user:hunter2@db:8086"}, "CW_INFLUX_URL"),
    "influx url without host": ({"CW_INFLUX_URL": "http://"}, "CW_INFLUX_URL"),
    "bad mqtt url": ({"CW_MQTT_URL": "http://user:hunter2@broker:1883"}, "CW_MQTT_URL"),
    "bad mqtt port": ({"CW_MQTT_URL": "mqtt://broker:99999"}, "CW_MQTT_URL"),
    "bad time zone": ({"CW_TZ": "Asia/Atlantis"}, "CW_TZ"),
    "webhook without secret": ({"CW_ALERT_WEBHOOK_URL": "https://hooks.example/x?token=hunter2"},
                               "CW_ALERT_WEBHOOK_SECRET"),
    "bad webhook url": ({"CW_ALERT_WEBHOOK_URL": "file:///etc/passwd", "CW_ALERT_WEBHOOK_SECRET": "x" * 40},
                        "CW_ALERT_WEBHOOK_URL"),
    "missing devices file": ({"CW_DEVICES_FILE": "/nonexistent/devices.toml"}, "CW_DEVICES_FILE"),
    "invalid devices file": (_bad_devices, "CW_DEVICES_FILE"),
    "misnamed devices table": (_misnamed_devices, "CW_DEVICES_FILE"),
    "missing rules dir": ({"CW_RULES_DIR": "/nonexistent/rules"}, "CW_RULES_DIR"),
    "rule template abuse": (_bad_rules, "CW_RULES_DIR"),
    "bad hj212 listen address": ({"CW_HJ212_LISTEN": "0.0.0.0"}, "CW_HJ212_LISTEN"),
    "bad hj212 listen port": ({"CW_HJ212_LISTEN": "127.0.0.1:70000"}, "CW_HJ212_LISTEN"),
    "hj212 port in use": ({"CW_HJ212_LISTEN": f"127.0.0.1:{HELD_PORT}"}, "CW_HJ212_LISTEN"),
    "api port in use": ({"CW_API_TOKENS": "long-enough-token-1=admin", "CW_API_PORT": str(HELD_PORT)}, "CW_API_HOST"),
    "api address not of this machine": ({"CW_API_TOKENS": "long-enough-token-1=admin", "CW_API_HOST": "192.0.2.1"},
                                        "CW_API_HOST"),
    "bad api host": ({"CW_API_HOST": "not a host"}, "CW_API_HOST"),
    "bad api port": ({"CW_API_PORT": "80800"}, "CW_API_PORT"),
    "tls cert without key": ({"CW_API_TLS_CERT": "/etc/hostname"}, "CW_API_TLS_KEY"),
    "unreadable tls pair": (_garbage_pem, "CW_API_TLS_CERT"),
    "v2 without token": ({"CW_INFLUX_API": "v2", "CW_INFLUX_ORG": "city"}, "CW_INFLUX_TOKEN"),
    "bad database name": ({"CW_INFLUX_DATABASE": "a;DROP"}, "CW_INFLUX_DATABASE"),
    "bad log level": ({"CW_LOG_LEVEL": "LOUD"}, "CW_LOG_LEVEL"),
    "zero connections": ({"CW_API_MAX_CONNECTIONS": "0"}, "CW_API_MAX_CONNECTIONS"),
    "zero sse per token": ({"CW_API_SSE_PER_TOKEN": "0"}, "CW_API_SSE_PER_TOKEN"),
    "not a number": ({"CW_API_HEADER_TIMEOUT_S": "soon"}, "CW_API_HEADER_TIMEOUT_S"),
}


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in a process group, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            out.append(int(entry.name))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_setting_exits_2_naming_it_and_leaves_no_process(tmp_path, case):
    extra, setting = CASES[case]
    if callable(extra):
        made = extra(tmp_path)
        extra = made if isinstance(made, dict) else {setting: made}
    env = {**clean_environ(), "CW_DATA_DIR": str(tmp_path / "data"), "CW_LOG_FORMAT": "text",
           # unreachable on purpose: nothing may be contacted before the settings are valid
           "CW_MQTT_URL": "mqtt://127.0.0.1:1", "CW_INFLUX_URL": "http://127.0.0.1:2", **extra}
    # A session of its own: every process it starts is in its process group.
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)  # a bound, not a speed claim
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{case}: citywatch run did not exit") from None
    assert proc.returncode == 2, (case, proc.returncode, err[-2000:])
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, lines  # one clear line, no traceback, no log noise
    assert lines[0].startswith(f"citywatch: {setting}"), lines
    assert "Traceback" not in err and out == ""
    for secret in (TOKEN_SECRET + "=", "hunter2"):
        assert secret not in err
    # nothing of it left: no ingest child, no other member of its process group
    deadline = time.monotonic() + 5
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(proc.pid) == []
    assert not (tmp_path / "data" / "spool-mqtt-0").exists()


def test_valid_settings_pass_the_same_checks(tmp_path):
    """The control: with valid settings the same command gets past the checks and starts."""
    env = {**clean_environ(), "CW_DATA_DIR": str(tmp_path / "data"), "CW_LOG_FORMAT": "text",
           "CW_MQTT_URL": "mqtt://127.0.0.1:1", "CW_INFLUX_URL": "http://127.0.0.1:2",
           "CW_API_TOKENS": "long-enough-token-1=admin", "CW_API_PORT": "0",
           "CW_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook", "CW_ALERT_WEBHOOK_SECRET": "s" * 32}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        seen = ""
        deadline = time.monotonic() + 60
        while "citywatch running" not in seen and time.monotonic() < deadline and proc.poll() is None:
            seen += proc.stdout.readline()
        assert "citywatch running" in seen, seen
        assert len(_group_members(proc.pid)) >= 2  # the ingest child process is running too
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(proc.pid) == []


def test_rules_check_refuses_template_abuse(tmp_path):
    rules_dir = _bad_rules(tmp_path)
    r = subprocess.run([sys.executable, "-m", "app.cli", "rules", "check", "--dir", rules_dir],
                       env=clean_environ(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "huge" in r.stdout and "'>100000000'" in r.stdout and "not a simple number format" in r.stdout
