"""The receiver's delivery stage: backoff on failure, a dead receiver shown in /health and
/metrics (the real API app, a real InfluxDB), recovery without loss, and a rate window
that survives a restart."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from alerts.build import build_alerting
from alerts.testing import FakeClock
from citywatch.model import Reading
from platforms import DingTalkRobot
from routing_helpers import local_s, make_pair, pump, reading

ROUTES = """\
receivers:
  - {{name: dust-office, type: dingtalk, url: "{url}", secret: "{secret}"}}
route:
  receiver: dust-office
  group_by: [site]
  group_wait: 0s
  group_interval: 1m
"""
RULE = """\
rules:
  - {id: test_pm10_now, kind: dust, severity: major, source: test, when: {field: pm10, above: 150},
     message: {zh: "PM10 {value}", en: "PM10 {value}"}, action: {zh: "处置", en: "act"}}
"""


def test_failures_back_off_mark_the_receiver_down_and_nothing_is_lost(tmp_path, caplog):
    caplog.set_level("DEBUG")
    clock = FakeClock(local_s("2026-11-27 10:00"))
    with DingTalkRobot(clock=clock, fail_with=503) as ding:
        engine, routing = make_pair(tmp_path, ROUTES.format(url=ding.url, secret=ding.secret), clock)
        d = routing.dispatchers["dust-office"]

        async def go() -> None:
            engine.process_readings([reading("dust", "S0001", "D00001", clock, pm10=200.0)])
            await pump(engine)
            routing.flush()
            waits = []
            for _ in range(3):
                waits.append(await d.step())
                assert await d.step() > 0  # before the backoff has passed, nothing is sent
                clock.advance(waits[-1])
            assert waits == [2.0, 4.0, 8.0]  # exponential backoff (2 s first)
            assert routing.status() == {"dust-office": "down"} and routing.backlog() == {"dust-office": 1}
            ding.fail_with = 0  # back up: the waiting group arrives, once
            await routing.deliver_pending()
            assert routing.status() == {"dust-office": "ok"} and routing.backlog() == {"dust-office": 0}

        asyncio.run(go())
        engine.close()
    assert len(ding.rejected) == 3 and len(ding.accepted) == 1
    assert "not delivered (dust-office: HTTP 503); retry in 2.0s" in caplog.text
    assert ding.token not in caplog.text and ding.secret not in caplog.text


def test_the_rate_window_is_remembered_across_a_restart(tmp_path):
    clock = FakeClock(local_s("2026-11-27 10:00"))
    with DingTalkRobot(clock=clock) as ding:
        routes = ROUTES.format(url=ding.url, secret=ding.secret)
        engine, routing = make_pair(tmp_path, routes, clock)

        async def first() -> None:
            for i in range(20):  # 20 sites, 20 messages: the robot's minute is full
                engine.process_readings([reading("dust", f"S{i:04d}", f"D{i:05d}", clock, pm10=200.0)])
                await pump(engine)
                routing.flush()
                await routing.deliver_pending()
                clock.advance(1)

        asyncio.run(first())
        engine.close()
        assert len(ding.accepted) == 20

        engine, routing = make_pair(tmp_path, routes, clock)  # a restart on the same state

        async def second() -> None:
            engine.process_readings([reading("dust", "S0099", "D00099", clock, pm10=200.0)])
            await pump(engine)
            routing.flush()
            assert await routing.deliver_pending() == 0  # held: the restart did not forget the window
            clock.advance(45)
            await routing.deliver_pending()

        asyncio.run(second())
        engine.close()
    assert ding.rejected == [] and len(ding.accepted) == 21 and ding.max_in_window(60.0) <= 20


def test_a_down_receiver_shows_in_health_and_metrics(influx, tmp_path):
    from api.app import create_app
    from citywatch.settings import Settings
    from ingest.service import build_ingest

    clock = FakeClock(local_s("2026-11-27 10:00"))
    db = f"routing_{uuid.uuid4().hex[:12]}"
    httpx.post(f"{influx.url}/query", data={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
    with DingTalkRobot(clock=clock, fail_with=500) as ding:
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES.format(url=ding.url, secret=ding.secret), "utf-8")
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "now.yaml").write_text(RULE, "utf-8")
        settings = Settings(rules_dir=rules, data_dir=tmp_path / "data", influx_url=influx.url, influx_database=db,
                            api_tokens=SecretStr("viewer-token-0001=viewer"), log_format="text", routes_file=routes)
        ingest = build_ingest(settings, mqtt=False)
        engine, _tasks = build_alerting(settings, registry=ingest.registry, mqtt=False, clock=clock)
        for t in _tasks:
            t.close()  # not run here: the test steps the stages itself
        routing = engine.routing
        d = routing.dispatchers["dust-office"]

        async def fail_three_times() -> None:
            engine.process_readings([Reading("dust", "S0001", "D00001", int(clock() * 1000), {"pm10": 300.0})])
            for dd in engine._dispatchers:
                while (await dd.step()) == 0.0:
                    pass
            routing.flush()
            for _ in range(3):
                clock.advance(await d.step())

        asyncio.run(fail_three_times())
        app = create_app(settings=settings, ingest=ingest, engine=engine)
        with TestClient(app) as client:
            health = client.get("/health").json()
            metrics = client.get("/metrics").text
        asyncio.run(routing.aclose())
        engine.close()
        ingest.close()
    assert health["status"] == "degraded" and health["receivers"] == {"dust-office": "down"}
    assert 'citywatch_alert_receiver_up{receiver="dust-office"} 0.0' in metrics
    assert 'citywatch_alert_receiver_backlog{receiver="dust-office"} 1.0' in metrics
    assert 'citywatch_alert_receiver_failures_total{receiver="dust-office"} 3.0' in metrics
    assert "tok123" not in metrics and ding.secret not in metrics


def test_rate_limiter_windows():
    from alerts.routing.deliver import RateLimiter

    feishu = RateLimiter(((100, 60.0), (5, 1.0)))  # Feishu: 100 a minute and 5 a second
    for i in range(5):
        assert feishu.wait_s(10.0) == 0.0
        feishu.record(10.0)
    assert feishu.wait_s(10.5) == 0.5  # the second is full
    assert feishu.wait_s(11.0) == 0.0
    t, sent = 11.0, 5
    while sent < 100:  # as fast as allowed: 5 a second
        t += feishu.wait_s(t)
        feishu.record(t)
        sent += 1
    assert t < 31.0  # the per-second window, not the minute, paced these
    # 100 in the minute that began at 10.0: the next waits for the first one to leave it.
    assert feishu.wait_s(t) == pytest.approx(70.0 - t)
    seeded = RateLimiter(((20, 60.0),), sent=[float(i) for i in range(20)])  # restored after a restart
    assert seeded.wait_s(30.0) == 30.0 and seeded.wait_s(60.0) == 0.0
