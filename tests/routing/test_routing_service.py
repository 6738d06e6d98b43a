"""Routing through the real service: `citywatch run` with CW_ROUTES_FILE, real mosquitto
and InfluxDB, the dust-episode scenario published over MQTT. The PM10 episode reaches a
(local, signature-checking) DingTalk robot as one message per site; the service is
SIGKILLed while the site's group waits, and after the restart the message arrives once."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from platforms import DingTalkRobot
from simulators import generate
from tests.support import Publisher, ServiceProcess, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TZ = ZoneInfo("Asia/Shanghai")
ROUTES = """\
receivers:
  - {{name: dust-office, type: dingtalk, url: "{url}", secret: "{secret}", at_mobiles: ["13800000000"]}}
  - {{name: archive, type: webhook, url: "http://127.0.0.1:9/never", secret: "x"}}
route:
  receiver: archive
  group_by: [site]
  group_wait: 20s
  group_interval: 30m
  routes:
    - {{match: {{kind: dust}}, receiver: dust-office}}
"""


def _grouped(db) -> bool:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return bool(con.execute("SELECT 1 FROM route_group_alerts").fetchall())
        finally:
            con.close()
    except sqlite3.OperationalError:
        return False


def test_service_routes_the_dust_episode_to_dingtalk_once_across_a_sigkill(mosquitto, influxd, tmp_path):
    with DingTalkRobot() as ding:
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES.format(url=ding.url, secret=ding.secret), "utf-8")
        env = service_env(mqtt_url=mosquitto.url, influx_url=influxd.url, data_dir=tmp_path / "cw",
                          database="routing", routes_file=str(routes), dashboard_url="https://dash.example/")
        svc = ServiceProcess(env, tmp_path / "service.log").start()
        try:
            svc.wait_log("connected to broker")
            day = (datetime.now(TZ) - timedelta(days=1)).date()
            start = datetime(day.year, day.month, day.day, 10, 0, tzinfo=TZ)
            split = int((start + timedelta(minutes=50)).timestamp() * 1000)  # the episode is 10:30-10:45
            messages = [(m.topic, m.payload) for m in generate("dust-episode", sites=2, seed=7, start=start,
                                                                 duration_s=5400) if m.sim_ts_ms < split]
            pub = Publisher(mosquitto.port, "pub-routing")
            pub.publish_all(messages)
            pub.close()

            db = tmp_path / "cw" / "alerts.sqlite3"
            deadline = time.monotonic() + 90
            while not _grouped(db):
                assert time.monotonic() < deadline, svc.log()[-3000:]
                time.sleep(0.05)
            svc.kill()  # the site's group is waiting (group_wait 20 s): nothing sent yet
            assert ding.accepted == []

            svc.start()
            svc.wait_log("connected to broker")
            deadline = time.monotonic() + 90
            while not ding.accepted:
                assert time.monotonic() < deadline, svc.log()[-3000:]
                time.sleep(0.1)
            time.sleep(5)  # a duplicate would have come by now
        finally:
            code = svc.stop()
    assert code == 0
    log = svc.log()
    assert ding.token not in log and ding.secret not in log  # credentials never logged
    assert ding.rejected == []  # signature, timestamp and body all as DingTalk checks them
    assert len(ding.accepted) == 1
    text = ding.accepted[0].body["markdown"]["text"]
    assert "dust_pm10_10min · S0001/D00001" in text and "站点 S0001" in text and "S0002" not in text
    assert "超过设定值" in text and "[打开看板](https://dash.example/)" in text and "@13800000000" in text
