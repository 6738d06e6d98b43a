"""Dead letters: paged listing with HJ 212 passwords redacted; replay through the committer."""

from __future__ import annotations

import json
import time

from conftest import auth

from citywatch.model import RawMessage

O, A = auth("operator"), auth("admin")
FRAME = (b"##0101QN=20261127103000000;ST=39;CN=2011;PW=654321;MN=4A4300000000000000D00001;Flag=5;"
         b"CP=&&DataTime=20261127103000;a34002-Rtd=86.5,a34002-Flag=N&&ABCD\r\n")


def _letters(stack):
    now = int(time.time() * 1000)
    good = json.dumps({"ts": now - 60_000, "values": {"pm10": 80.0}}).encode()
    stack.ingest.deadletters.add_many([
        (RawMessage("hj212/127.0.0.1:5000", FRAME, now, "hj212"), ["crc_mismatch: bad CRC"]),
        # rejected earlier (e.g. the device was not registered yet); valid for today's decoder
        (RawMessage("telemetry/dust/S0001/D00001", good, now, "mqtt"), ["unknown_device: not registered"]),
        (RawMessage("telemetry/dust/S0001/D00001", b"{not json", now, "mqtt"), ["not_json"]),
    ])


def test_list_redacts_and_pages(client, stack):
    _letters(stack)
    doc = client.get("/v1/deadletters", headers=O).json()
    assert doc["total"] == 3 and len(doc["items"]) == 3
    hj = doc["items"][0]
    assert "PW=***" in hj["payload"] and "654321" not in json.dumps(doc)
    assert hj["received_at"].endswith("+08:00") and hj["reasons"] == ["crc_mismatch: bad CRC"]
    page = client.get("/v1/deadletters?limit=1&offset=1", headers=O).json()
    assert page["total"] == 3 and [i["id"] for i in page["items"]] == [doc["items"][1]["id"]]
    for bad in ("limit=0", "limit=501", "offset=-1", "include_replayed=maybe"):
        assert client.get(f"/v1/deadletters?{bad}", headers=O).status_code == 422


def test_replay(client, stack):
    _letters(stack)
    dry = client.post("/v1/deadletters/replay", headers=A, json={"dry_run": True}).json()
    assert dry == {"accepted": 1, "still_rejected": 2, "dry_run": True}
    assert stack.ingest.deadletters.count() == 3
    stack.ingest.committer.start()
    try:
        r = client.post("/v1/deadletters/replay", headers=A)
    finally:
        stack.ingest.committer.stop()
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "still_rejected": 2, "dry_run": False}
    assert stack.ingest.deadletters.count() == 2  # the replayed one is marked
    assert stack.ingest.spool.backlog_lines == 1  # durably spooled for the writer
    left = client.get("/v1/deadletters", headers=O).json()["items"]
    assert all(i["replayed_ms"] is None for i in left)
    assert len(client.get("/v1/deadletters?include_replayed=true", headers=O).json()["items"]) == 3
