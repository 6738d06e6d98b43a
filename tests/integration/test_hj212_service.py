"""HJ 212 monitors through the real service: gateway → committer → spool → influxd, with
answers only after fsync, dead letters for bad frames, and a 1,000-monitor fleet."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import subprocess
import sys
import time

import pytest

from devtools.servers import free_port
from ingest.hj212 import FrameDecoder, encode_frame
from ingest.hj212.testing import fleet_registry, run_fleet
from tests.support import ROOT, ServiceProcess, influx_count, service_env, wait_count

pytestmark = pytest.mark.integration

PACKET_RT = (b"##0372QN=20240601120000000;ST=39;CN=2011;PW=123456;MN=4A4300000000000000D00001;Flag=5;CP=&&"
             b"DataTime=20240601120000;a34001-Rtd=185.0,a34001-Flag=N;a34002-Rtd=96.0,a34002-Flag=N;a34004-Rtd=48.0,"
             b"a34004-Flag=N;LA-Rtd=62.3,LA-Flag=N;a01001-Rtd=26.4,a01001-Flag=N;a01002-Rtd=41.0,a01002-Flag=N;"
             b"a01006-Rtd=93.10,a01006-Flag=N;a01007-Rtd=2.1,a01007-Flag=N;a01008-Rtd=135,a01008-Flag=N&&84C1\r\n")
FLEET = 1000


def registry_toml(n: int) -> str:
    out = ['[[device]]\nid = "D90001"\nsite = "S0001"\nkind = "dust"\nhj212_mn = "4A4300000000000000D00001"\n'
           'hj212_pw = "123456"\n']
    for d in fleet_registry(n).devices.values():
        out.append(f'[[device]]\nid = "{d.id}"\nsite = "{d.site}"\nkind = "dust"\nhj212_mn = "{d.hj212_mn}"\n'
                   f'hj212_pw = "{d.hj212_pw}"\n')
    return "\n".join(out)


def exchange(port: int, frame: bytes, *, expect_answer: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(frame)
        if not expect_answer:
            time.sleep(0.3)
            return b""
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


@pytest.fixture
def gateway_service(mosquitto, influxd, tmp_path):
    reg = tmp_path / "devices.toml"
    reg.write_text(registry_toml(FLEET))
    port = free_port()
    env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=tmp_path / "cw", database="hj",
                      devices_file=str(reg), hj212_listen=f"127.0.0.1:{port}",
                      hj212_max_per_address=str(FLEET))  # the whole fleet connects from 127.0.0.1
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("HJ 212 gateway listening")
    yield svc, port, influxd
    svc.stop()


def test_verified_packet_is_answered_and_stored_as_the_registered_device(gateway_service):
    svc, port, influxd = gateway_service
    answer = exchange(port, PACKET_RT)
    (frame,) = FrameDecoder().feed(answer)
    assert b"CN=9014" in frame.data and b"QN=20240601120000000" in frame.data
    assert wait_count(influxd.url, "hj", 1) == 1
    import httpx

    r = httpx.get(f"{influxd.url}/query", params={"db": "hj", "epoch": "ms", "q":
                  'SELECT "pm10","tsp","pm25","noise","pressure" FROM "dust" WHERE "device"=\'D90001\''})
    series = r.json()["results"][0]["series"][0]
    row = dict(zip(series["columns"], series["values"][0]))
    assert row == {"time": 1717214400000, "pm10": 96.0, "tsp": 185.0, "pm25": 48.0, "noise": 62.3,
                   "pressure": 93.1}


def test_bad_frames_get_specific_dead_letters_and_the_service_survives(gateway_service):
    svc, port, influxd = gateway_service
    wrong_crc = PACKET_RT.replace(b"84C1", b"0000")
    data = PACKET_RT[6:-6]  # the data segment between length and CRC
    wrong_pw = encode_frame(data.replace(b"PW=123456", b"PW=654321"))  # a valid frame, a wrong password
    unknown_mn = encode_frame(data.replace(b"D00001", b"D99999"))
    bad_length = wrong_crc.replace(b"##0372", b"##0999")  # (with a right CRC the CRC would prove the frame)
    for frame in (wrong_crc, wrong_pw, unknown_mn):
        assert b"CN=9011" in exchange(port, frame)  # QnRtn error answers
    exchange(port, bad_length, expect_answer=False)
    exchange(port, b"\x00\x01GET / HTTP/1.1\r\n\r\n", expect_answer=False)
    deadline = time.monotonic() + 15
    letters: list = []
    while time.monotonic() < deadline and len(letters) < 5:
        out = subprocess.run([sys.executable, "-m", "app.cli", "deadletters", "list", "--json"], env=svc.env,
                             cwd=ROOT, capture_output=True, text=True, check=True)
        letters = json.loads(out.stdout)
        time.sleep(0.3)
    reasons = " | ".join(r for d in letters for r in d["reasons"])
    for code in ("crc", "wrong_pw", "unknown_mn"):
        assert code in reasons, reasons
    assert len(letters) >= 5
    assert all("PW=654321" not in d["payload"] and "PW=123456" not in d["payload"] for d in letters)
    assert exchange(port, PACKET_RT).find(b"CN=9014") > 0  # still serving
    assert svc.proc.poll() is None


def test_a_fleet_of_1000_monitors_loses_nothing(gateway_service):
    svc, port, influxd = gateway_service
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    result = asyncio.run(run_fleet("127.0.0.1", port, monitors=FLEET, packets_each=3, registry=fleet_registry(FLEET)))
    assert result.errors == [] and result.sent == result.answered == FLEET * 3
    assert wait_count(influxd.url, "hj", FLEET * 3, timeout=60) == FLEET * 3
    time.sleep(0.5)
    assert influx_count(influxd.url, "hj") == FLEET * 3


def test_mqtt_ingest_runs_beside_the_gateway_and_the_service_stops_cleanly(gateway_service, mosquitto):
    """The gateway lives in the main process and MQTT ingest in its child: the child must
    not try to bind the gateway's port too (it did, and died at every start)."""
    from tests.support import Publisher

    svc, port, influxd = gateway_service
    svc.wait_log("connected to broker")
    start_ms = int(time.time() * 1000) - 600_000
    messages = [(f"telemetry/dust/S{d:04d}/D{d:05d}",
                 json.dumps({"ts": start_ms + i * 1000, "values": {"pm10": 60.0 + i % 9, "pm25": 30.0}}).encode())
                for i in range(100) for d in range(1, 11)]
    pub = Publisher(mosquitto.port, "pub-beside-hj212")
    assert pub.publish_all(messages) == 1000
    pub.close()
    assert exchange(port, PACKET_RT).find(b"CN=9014") > 0
    assert wait_count(influxd.url, "hj", 1001, timeout=60) == 1001
    assert "exited with" not in svc.log() and "address already in use" not in svc.log()
    assert svc.stop() == 0
