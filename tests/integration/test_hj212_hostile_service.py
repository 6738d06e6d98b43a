"""The HJ 212 port of the real service on a hostile network: a garbage flood and a password
guesser against `citywatch run` (gateway → committer → dead letters / spool → influxd,
alert engine, API). The monitor connects from 127.0.0.2, the attackers from 127.0.0.1 and
127.0.0.3 (all loopback on Linux)."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import httpx
import pytest

from devtools.servers import free_port
from ingest.deadletters import DeadLetterStore
from ingest.hj212 import encode_frame
from ingest.hj212.probe import guess_rate
from tests.support import ServiceProcess, influx_count, service_env, wait_count

pytestmark = pytest.mark.integration

MN = "4A4300000000000000D00001"
PACKET_RT = (b"##0372QN=20240601120000000;ST=39;CN=2011;PW=123456;MN=4A4300000000000000D00001;Flag=5;CP=&&"
             b"DataTime=20240601120000;a34001-Rtd=185.0,a34001-Flag=N;a34002-Rtd=96.0,a34002-Flag=N;a34004-Rtd=48.0,"
             b"a34004-Flag=N;LA-Rtd=62.3,LA-Flag=N;a01001-Rtd=26.4,a01001-Flag=N;a01002-Rtd=41.0,a01002-Flag=N;"
             b"a01006-Rtd=93.10,a01006-Flag=N;a01007-Rtd=2.1,a01007-Flag=N;a01008-Rtd=135,a01008-Flag=N&&84C1\r\n")
TOKEN = "hostile-test-admin-token"
LOCKOUT_AFTER, BURST = 10, 20


def exchange(port: int, frame: bytes, source: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(frame)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


def flood(port: int, source: str, connections: int, frames_each: int) -> None:
    """Framing garbage from `source`: every frame a dead letter, none a login."""
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0)) as s:
            s.sendall(b"##00x1junk\r\n" * frames_each)  # the last error ends at EOF
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


@pytest.fixture
def service(mosquitto, influxd, tmp_path):
    reg = tmp_path / "devices.toml"
    reg.write_text(f'[[device]]\nid = "D90001"\nsite = "S0001"\nkind = "dust"\nhj212_mn = "{MN}"\n'
                   'hj212_pw = "123456"\n')
    port, api_port = free_port(), free_port()
    env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=tmp_path / "cw", database="hostile",
                      devices_file=str(reg), hj212_listen=f"127.0.0.1:{port}", api_tokens=f"{TOKEN}=admin",
                      api_port=str(api_port), hj212_lockout_after=str(LOCKOUT_AFTER), hj212_lockout_s="120",
                      hj212_deadletter_rate="1", hj212_deadletter_burst=str(BURST))
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("HJ 212 gateway listening")
    svc.wait_log("HTTP API and dashboard")
    yield svc, port, f"http://127.0.0.1:{api_port}", influxd, tmp_path / "cw"
    svc.stop()


def test_garbage_flood_and_password_guessing_against_the_service(service):
    svc, port, api, influxd, data_dir = service
    assert b"CN=9014" in exchange(port, PACKET_RT, "127.0.0.2")  # the monitor logs in
    assert wait_count(influxd.url, "hostile", 1) == 1

    # 10,000 garbage frames from an address that never logs in
    t0 = time.monotonic()
    flood(port, "127.0.0.3", connections=10, frames_each=1000)
    flood_s = time.monotonic() - t0
    store = DeadLetterStore(data_dir / "deadletters.sqlite3")
    try:
        for _ in range(50):
            stored = sum(1 for d in store.list(limit=100_000) if d.topic.startswith("hj212/127.0.0.3:"))
            text = httpx.get(f"{api}/metrics").text
            dropped = metric(text, "citywatch_hj212_deadletters_dropped_total")
            if stored + dropped >= 10_000:
                break
            time.sleep(0.2)
    finally:
        store.close()
    assert stored + dropped == 10_000
    assert BURST <= stored <= BURST + flood_s + 5, (stored, flood_s)  # the burst, then 1/s
    print(f"\n10,000 garbage frames in {flood_s:.1f} s: {stored} dead letters stored, {dropped:.0f} counted")

    # 300 password guesses from another address
    res = asyncio.run(guess_rate("127.0.0.1", port, mn=MN, seconds=60, connections=4, source="127.0.0.1",
                                 max_guesses=300))
    print(f"300 guesses: {res}")
    assert res.sent == 300 and res.other_answers == 0
    assert res.refusals < LOCKOUT_AFTER  # then the address and the MN are locked out
    text = httpx.get(f"{api}/metrics").text
    assert metric(text, 'citywatch_hj212_lockouts_total{scope="address"}') == 1
    assert metric(text, 'citywatch_hj212_lockouts_total{scope="mn"}') == 1
    assert metric(text, "citywatch_hj212_auth_failures_total") == LOCKOUT_AFTER
    assert metric(text, "citywatch_hj212_locked_frames_total") >= 1

    # the lockout is an alert (zh-CN and English) through the engine and the API
    headers = {"Authorization": f"Bearer {TOKEN}"}
    alerts: list = []
    for _ in range(50):
        alerts = httpx.get(f"{api}/v1/alerts", params={"state": "active"}, headers=headers).json()["items"]
        if len([a for a in alerts if a["rule"] == "hj212_login_lockout"]) == 2:
            break
        time.sleep(0.2)
    lock = {a["device"]: a for a in alerts if a["rule"] == "hj212_login_lockout"}
    assert set(lock) == {"ip-127-0-0-1", f"mn-{MN}"}
    a = lock["ip-127-0-0-1"]
    assert a["state"] == "firing" and a["severity"] == "major" and a["kind"] == "hj212_gateway"
    assert "连续 10 次登录失败" in a["message"] and "locked out after 10 failed logins" in a["message_en"]
    # logged once per lockout, never with a password
    log = svc.log()
    assert log.count("locked out for") == 2
    assert "g0000000" not in log and "123456" not in log
    # the lockout events are stored too, and the monitor that logged in before still gets through
    assert wait_count(influxd.url, "hostile", 2, measurement="events", field="failures") == 2
    again = encode_frame(PACKET_RT[6:-6].replace(b"QN=20240601120000000", b"QN=20240601120000001"))
    assert b"CN=9014" in exchange(port, again, "127.0.0.2")
    assert svc.proc.poll() is None
    assert influx_count(influxd.url, "hostile") >= 1
