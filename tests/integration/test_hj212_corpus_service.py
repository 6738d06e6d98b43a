"""The HJ 212 field corpus (tests/hj212/corpus/packets.yaml) through the REAL service:
each packet over its own TCP connection to the gateway, the answers it must get, then in
the real InfluxDB exactly the values and flags it must store, and in the dead-letter store
the reasons of what it must not. Plus the device-fault alert and the flags in the API."""

from __future__ import annotations

import socket
import sqlite3
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from devtools.servers import free_port
from ingest.hj212 import FrameDecoder, encode_frame, read_header
from ingest.hj212.redact import redact_pw
from tests.hj212.corpus_packets import Packet, load, registry_toml
from tests.support import ServiceProcess, service_env

pytestmark = pytest.mark.integration

REGISTRY, PACKETS = load()
TOKEN = "corpus-viewer-token"


def send(port: int, packet: Packet, timeout: float = 10.0) -> list[str]:
    """Send the packet's bytes in one write; collect as many answers as it expects, then close
    (a frame that is never completed becomes a `truncated` dead letter at the close)."""
    got: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(packet.wire)
        decoder, deadline = FrameDecoder(), time.monotonic() + timeout
        while len(got) < len(packet.answers) and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            for frame in decoder.feed(chunk):
                h = read_header(frame.data)
                got.append(h.get("CN") + (":" + h.cp.removeprefix("QnRtn=") if h.get("CN") == "9011" else ""))
        if not packet.answers:
            s.settimeout(0.4)  # none is due: make sure none comes
            try:
                extra = s.recv(4096)
            except TimeoutError:
                extra = b""
            assert extra == b"", (packet.id, extra)
    return got


def gateway_answers(packet: Packet) -> list[str]:
    """The standard's answers, as the hardened gateway gives them on a fresh connection: a
    frame that fails identity before the connection has logged in (bad CRC, unknown MN,
    wrong PW) gets the one uniform refusal, QnRtn 3, so an attacker cannot tell which check
    failed (ingest/hj212/README.md "On a hostile network"); the decoder's own answer for a
    bad CRC (QnRtn 9) is what a logged-in connection gets."""
    identity = {"bad_crc", "unknown_mn", "wrong_pw"}
    if identity & {reason.partition(":")[0] for reason in packet.dead_letter}:
        return ["9011:3" if a.startswith("9011:") else a for a in packet.answers]
    return packet.answers


def query(url: str, q: str) -> list[dict]:
    r = httpx.get(f"{url}/query", params={"db": "corpus", "epoch": "ms", "q": q}, timeout=10)
    r.raise_for_status()
    out = []
    for series in r.json()["results"][0].get("series", []):
        for row in series["values"]:
            out.append(dict(zip(series["columns"], row)))
    return out


@pytest.fixture
def corpus_service(mosquitto, influxd, tmp_path):
    reg = tmp_path / "devices.toml"
    reg.write_text(registry_toml(REGISTRY))
    port, api_port = free_port(), free_port()
    env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=tmp_path / "cw", database="corpus",
                      devices_file=str(reg), hj212_listen=f"127.0.0.1:{port}", api_tokens=f"{TOKEN}=viewer",
                      api_port=str(api_port))
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    svc.wait_log("HJ 212 gateway listening")
    yield svc, port, api_port, influxd, tmp_path / "cw" / "deadletters.sqlite3"
    svc.stop()


def test_the_corpus_through_the_real_gateway_into_influxdb(corpus_service):
    svc, port, api_port, influxd, deadletters = corpus_service
    for packet in PACKETS:
        assert send(port, packet) == gateway_answers(packet), packet.id

    # Stored: every expected point, with exactly its values and flags (nothing else).
    expected = [(p, s) for p in PACKETS for s in p.stores]
    assert len(expected) >= 28
    missing = list(expected)
    deadline = time.monotonic() + 60
    while missing and time.monotonic() < deadline:
        still = []
        for packet, store in missing:
            where = f"\"device\" = '{packet.device.id}' AND time = {store.ts_ms}ms"
            if store.period:
                where += f" AND \"period\" = '{store.period}'"
            rows = query(influxd.url, f'SELECT * FROM "{store.measurement}" WHERE {where}')
            if not rows:
                still.append((packet, store))
                continue
            [row] = rows
            fields = {k: v for k, v in row.items() if v is not None and k not in ("time", "device", "site", "period")}
            want = {**store.values, **{f"{k}_flag": v for k, v in store.flags.items()}}
            assert fields == want, packet.id
            assert row["site"] == packet.device.site and row.get("period") == store.period, packet.id
        missing = still
        if missing:
            time.sleep(0.3)
    assert not missing, [p.id for p, _ in missing]

    # Dead letters: each entry's reasons, found by the (redacted) bytes it came from.
    with sqlite3.connect(f"file:{deadletters}?mode=ro", uri=True) as db:
        letters = db.execute("SELECT payload, reasons FROM deadletters").fetchall()
    import json

    for packet in PACKETS:
        frames = [redact_pw(f) for f in packet.frames]
        codes = sorted(r.partition(":")[0] for payload, reasons in letters
                       if redact_pw(payload) in frames or redact_pw(payload) == redact_pw(packet.wire)
                       or (len(frames) == 1 and redact_pw(payload) == frames[0].rstrip(b"\r\n"))
                       for r in json.loads(reasons))
        assert codes == sorted(packet.dead_letter), packet.id

    # A fresh D flag (now): the device-fault alert fires, and the API shows the flags.
    flags = next(p for p in PACKETS if p.id == "every-data-flag")
    now = datetime.now(ZoneInfo("Asia/Shanghai")).replace(microsecond=0) - timedelta(seconds=5)
    stamp = now.strftime("%Y%m%d%H%M%S")
    live = encode_frame(f"QN={stamp}000;ST=39;CN=2011;PW=123456;MN={flags.device.hj212_mn};Flag=5;CP=&&"
                        f"DataTime={stamp};a34002-Rtd=120.0,a34002-Flag=D;a34004-Rtd=60.0,a34004-Flag=N&&")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(live)
        assert b"CN=9014" in s.recv(4096)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    api = f"http://127.0.0.1:{api_port}"
    deadline, alert = time.monotonic() + 30, None
    while time.monotonic() < deadline and alert is None:
        try:
            items = httpx.get(f"{api}/v1/alerts", params={"site": flags.device.site}, headers=headers,
                              timeout=5).json().get("items", [])
        except httpx.HTTPError:
            items = []
        alert = next((a for a in items if a["rule"] == "dust_sensor_fault"), None)
        time.sleep(0.3)
    assert alert is not None and alert["device"] == flags.device.id
    assert "传感器故障" in alert["message"] and alert["message_en"]
    latest = httpx.get(f"{api}/v1/readings/latest", params={"kind": "dust", "site": flags.device.site},
                       headers=headers, timeout=10).json()["items"]
    [item] = [i for i in latest if i["device"] == flags.device.id]
    assert item["values"]["pm10"] == 120.0 and item["flags"] == {"pm10": "D", "pm25": "N"}
    start = (now - timedelta(minutes=5)).isoformat()
    series = httpx.get(f"{api}/v1/series", params={"kind": "dust", "site": flags.device.site, "field": "pm10",
                                                   "start": start, "every": "1m"}, headers=headers,
                       timeout=10).json()["series"]
    [one] = series
    assert one["points"] and [f for _, f in one["flags"]] == ["D"]
    assert svc.proc.poll() is None
