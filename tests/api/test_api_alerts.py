"""Alerts (list, filter, page, ack), the SSE stream, and rules (GET, PUT with validation)."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from conftest import TOKENS, auth, episode_until, feed

V, O, A = auth("viewer"), auth("operator"), auth("admin")


@pytest.fixture
def firing(stack):
    readings, events, _ = episode_until("10:45")
    feed(stack.engine, readings, events)
    return stack


def test_list_filter_page(client, firing):
    doc = client.get("/v1/alerts", headers=V).json()
    rules = {a["rule"] for a in doc["items"]}
    assert "dust_pm10_10min" in rules and doc["next_offset"] is None
    pm = next(a for a in doc["items"] if a["rule"] == "dust_pm10_10min")
    assert pm["state"] == "firing" and pm["site"] == "S0001" and pm["started_at"].endswith("+08:00")
    assert "PM10" in pm["message"] and pm["message_en"]
    assert {a["state"] for a in client.get("/v1/alerts?state=active", headers=V).json()["items"]} <= {"pending", "firing"}
    assert client.get("/v1/alerts?site=S0002", headers=V).json()["items"] == []
    assert all(a["severity"] == "major" for a in client.get("/v1/alerts?severity=major", headers=V).json()["items"])
    n = len(doc["items"])
    page = client.get("/v1/alerts?limit=1", headers=V).json()
    assert len(page["items"]) == 1 and page["next_offset"] == (1 if n > 1 else None)
    for bad in ("state=open", "severity=high", "limit=0", "limit=501", "offset=-1", "site=S'1", "rule=a%0Ab"):
        assert client.get(f"/v1/alerts?{bad}", headers=V).status_code == 422, bad


def test_ack(client, firing):
    pm = client.get("/v1/alerts?rule=dust_pm10_10min", headers=V).json()["items"][0]
    r = client.post(f"/v1/alerts/{pm['id']}/ack", headers=O, json={"note": "已通知现场停工"})
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["acked"] and a["acked_by"] == "王工" and a["ack_note"] == "已通知现场停工"
    assert client.get(f"/v1/alerts/{pm['id']}", headers=V).json()["acked"] is True
    # idempotent; no body is fine; unknown id 404; bad id 422; over-long note 422
    assert client.post(f"/v1/alerts/{pm['id']}/ack", headers=A).json()["acked_by"] == "王工"
    assert client.post("/v1/alerts/ffffffffffffffffffff/ack", headers=O).status_code == 404
    assert client.post("/v1/alerts/a.b/ack", headers=O).status_code == 422
    assert client.post(f"/v1/alerts/{pm['id']}/ack", headers=O, json={"note": "x" * 501}).status_code == 422
    assert client.get("/v1/alerts/ffffffffffffffffffff", headers=V).status_code == 404


def test_sse_receives_live_alert(stack, server):
    readings, events, _ = episode_until("10:45")
    received: list[dict] = []
    comments: list[str] = []
    ready = threading.Event()

    def listen():
        with httpx.stream("GET", f"{server.url}/v1/alerts/stream", headers=auth("viewer"), timeout=20) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith(":"):
                    comments.append(line)
                    ready.set()
                elif line.startswith("data:"):
                    received.append(json.loads(line[5:]))
                    if received[-1]["alert"]["rule"] == "dust_pm10_10min" and received[-1]["event"] == "firing":
                        return

    stack.app.state.ctx.limits.heartbeat_s = 0.2
    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10), "no stream"
    time.sleep(0.5)  # at least one heartbeat
    feed(stack.engine, readings, events)
    t.join(15)
    assert not t.is_alive(), f"no live firing alert; got {[(n['event'], n['alert']['rule']) for n in received]}"
    assert any(c.startswith(": keep-alive") for c in comments)
    n = received[-1]
    assert n["alert"]["site"] == "S0001" and n["seq"] > 0
    # a wrong token is refused before streaming starts
    assert httpx.get(f"{server.url}/v1/alerts/stream", headers={"Authorization": "Bearer nope-nope"}).status_code == 401
    assert httpx.get(f"{server.url}/v1/alerts/stream?token={TOKENS['viewer']}").status_code == 401  # header only


def test_rules_get_put(client, stack):
    rules = client.get("/v1/rules", headers=V).json()
    ids = {r["id"] for r in rules}
    assert {"dust_pm10_10min", "dust_wet_operation"} <= ids
    one = client.get("/v1/rules/dust_pm10_10min", headers=V).json()
    assert one["kind"] == "dust"
    assert client.get("/v1/rules/nope", headers=V).status_code == 404
    new = {"kind": "dust", "severity": "warning", "source": "test", "when": {"field": "pm10", "above": 500},
           "message": {"zh": "PM10 {value} {unit} 超过 {limit}", "en": "PM10 {value} {unit} above {limit}"},
           "action": {"zh": "处理", "en": "act"}}
    r = client.put("/v1/rules/api_test_rule", headers=A, json=new)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "api_test_rule" and "api_test_rule" in stack.engine.rules
    bad = client.put("/v1/rules/api_bad", headers=A, json={"kind": "dust", "severity": "severe",
                                                           "when": {"field": "nope", "above": 1}})
    assert bad.status_code == 422
    locs = {tuple(d["loc"]) for d in bad.json()["detail"]}
    assert ("body", "severity") in locs and ("body", "source") in locs, locs
    assert "api_bad" not in stack.engine.rules  # nothing swapped in
    unknown_field = client.put("/v1/rules/api_bad", headers=A, json={**new, "when": {"field": "nope", "above": 1}})
    assert unknown_field.status_code == 422 and "nope" in unknown_field.text
    assert client.put("/v1/rules/other", headers=A, json={**new, "id": "api_test_rule"}).status_code == 422
    assert client.put("/v1/rules/a%20b", headers=A, json=new).status_code == 422
    assert client.put("/v1/rules/api_test_rule", headers=A, json=[1]).status_code == 422
    # what GET gives can be PUT back (round trip), e.g. to lower a set value
    one["when"][0]["threshold"]["default"] = 120.0
    r = client.put("/v1/rules/dust_pm10_10min", headers=A, json=one)
    assert r.status_code == 200, r.text
    assert client.get("/v1/rules/dust_pm10_10min", headers=V).json()["when"][0]["threshold"]["default"] == 120.0
