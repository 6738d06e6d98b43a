"""A burst larger than a DingTalk robot's 20 messages a minute: everything arrives, merged,
and the robot never sees more than 20 requests in any minute (simulated clock)."""

from __future__ import annotations

import asyncio
import re

from alerts.testing import FakeClock
from platforms import DingTalkRobot
from routing_helpers import local_s, make_pair, pump, reading

ROUTES = """\
receivers:
  - {{name: dust-office, type: dingtalk, url: "{url}", secret: "{secret}"}}
route:
  receiver: dust-office
  group_by: [site]
  group_wait: 30s
  group_interval: 5m
"""


def test_100_alerts_across_60_sites_in_one_minute_reach_a_rate_limited_robot_completely(tmp_path):
    clock = FakeClock(local_s("2026-11-27 10:00"))
    with DingTalkRobot(clock=clock) as ding:
        engine, routing = make_pair(tmp_path, ROUTES.format(url=ding.url, secret=ding.secret), clock)
        expected: set[tuple[str, str]] = set()

        async def burst() -> None:
            # 60 sites in one minute: 40 fire PM10 and PM2.5, 20 fire PM10 only = 100 alerts.
            for i in range(60):
                site, device = f"S{i:04d}", f"D{i:05d}"
                values = {"pm10": 200.0, "pm25": 100.0} if i < 40 else {"pm10": 200.0}
                engine.process_readings([reading("dust", site, device, clock, **values)])
                expected.update((rule, f"{site}/{device}") for rule in
                                (("dust_pm10_high", "dust_pm25_high") if i < 40 else ("dust_pm10_high",)))
                await pump(engine)
                routing.flush()
                await routing.deliver_pending()
                clock.advance(1)
            # Then five simulated minutes, second by second: every group is due by 10:01:30.
            for _ in range(300):
                clock.advance(1)
                routing.flush()
                await routing.deliver_pending()
            assert routing.backlog() == {"dust-office": 0}

        asyncio.run(burst())
        assert len(engine.list_alerts(state="firing", limit=1000)) == 100
        engine.close()

    assert len(expected) == 100
    assert ding.rejected == []  # never "send too fast" (130101), never a bad signature
    assert ding.max_in_window(60.0) <= 20
    seen = set()
    for r in ding.accepted:
        seen.update(re.findall(r"(dust_pm(?:10|25)_high) · (S\d{4}/D\d{5})", r.body["markdown"]["text"]))
    assert seen == expected  # every alert reached the robot
    assert len(ding.accepted) < 60  # merged: fewer messages than groups
    print(f"{len(ding.accepted)} DingTalk messages for 60 groups")
