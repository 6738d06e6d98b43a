"""The routing pipeline end to end inside one process: a real AlertEngine with rules, the
routing stage, groups, inhibition and receivers posting to local platform servers that
check signatures, timestamp windows and body schemas."""

from __future__ import annotations

import asyncio

from alerts.testing import FakeClock
from platforms import CitywatchWebhook, DingTalkRobot, WeComRobot
from routing_helpers import DASHBOARD, ROUTES, local_s, make_pair, pump, reading


def _routes(ding: DingTalkRobot, wecom: WeComRobot, archive: CitywatchWebhook) -> str:
    return ROUTES.format(ding=ding.url, ding_secret=ding.secret, wecom=wecom.url, archive=archive.url,
                         archive_secret=archive.secret)


def test_dust_episode_four_rules_one_site_arrives_as_one_signed_dingtalk_message(tmp_path):
    clock = FakeClock(local_s("2026-11-27 10:00"))
    with DingTalkRobot(clock=clock) as ding, WeComRobot(clock=clock) as wecom, CitywatchWebhook() as archive:
        engine, routing = make_pair(tmp_path, _routes(ding, wecom, archive), clock)

        async def episode() -> None:
            # Four rules at one site within half a minute (one reading every 8 s), inside
            # the route's group_wait of 30 s.
            for values in ({"pm10": 210.0}, {"pm25": 120.0}, {"tsp": 450.0}, {"noise": 78.0}):
                engine.process_readings([reading("dust", "S0001", "D00001", clock, **values)])
                await pump(engine)
                routing.flush()
                await routing.deliver_pending()
                clock.advance(8)
            assert ding.accepted == []  # still inside group_wait (30 s from the first alert)
            clock.advance(8)
            routing.flush()
            await routing.deliver_pending()
            # Nothing new: the next group_interval passes without a second message.
            clock.advance(301)
            routing.flush()
            await routing.deliver_pending()

        asyncio.run(episode())
        engine.close()

    assert ding.rejected == [] and len(ding.accepted) == 1
    body = ding.accepted[0].body
    text = body["markdown"]["text"]
    for rule in ("dust_pm10_high", "dust_pm25_high", "dust_tsp_high", "dust_noise_high"):
        assert rule in text
    assert "站点 S0001" in body["markdown"]["title"] and "4 条告警" in body["markdown"]["title"]
    assert "S0001/D00001" in text and "数值 210" in text and "自 11-27 10:00" in text
    assert f"[打开看板]({DASHBOARD})" in text
    assert body["at"]["atMobiles"] == ["13800000000"] and "@13800000000" in text
    # Dust routes continue to siblings but no sibling matches: the default receiver is not used.
    assert archive.accepted == [] and wecom.accepted == []


def test_heating_critical_at_night_reaches_only_the_wecom_receiver(tmp_path):
    clock = FakeClock(local_s("2026-11-28 03:10"))  # night in Asia/Shanghai
    with DingTalkRobot(clock=clock) as ding, WeComRobot(clock=clock) as wecom, CitywatchWebhook() as archive:
        engine, routing = make_pair(tmp_path, _routes(ding, wecom, archive), clock)

        async def leak() -> None:
            engine.process_readings([reading("heating", "HS07", "H00007", clock, primary_supply_pressure=1.9)])
            await pump(engine)
            clock.advance(31)
            routing.flush()
            await routing.deliver_pending()

        asyncio.run(leak())
        engine.close()

    assert wecom.rejected == [] and len(wecom.accepted) == 1
    content = wecom.accepted[0].body["markdown"]["content"]
    assert "heating_leak" in content and "紧急" in content and "HS07/H00007" in content
    assert ding.accepted == [] and archive.accepted == []


def test_heating_critical_by_day_falls_through_to_the_default_receiver(tmp_path):
    clock = FakeClock(local_s("2026-11-28 15:00"))  # outside the on-call route's 22:00-08:00
    with DingTalkRobot(clock=clock) as ding, WeComRobot(clock=clock) as wecom, CitywatchWebhook() as archive:
        engine, routing = make_pair(tmp_path, _routes(ding, wecom, archive), clock)

        async def leak() -> None:
            engine.process_readings([reading("heating", "HS07", "H00007", clock, primary_supply_pressure=1.9)])
            await pump(engine)
            clock.advance(31)
            routing.flush()
            await routing.deliver_pending()

        asyncio.run(leak())
        engine.close()

    assert wecom.accepted == [] and ding.accepted == []
    assert archive.rejected == [] and len(archive.accepted) == 1  # the signature checked out
    sent = archive.accepted[0].body
    assert sent["event"] == "group" and sent["alert"]["alerts"][0]["rule"] == "heating_leak"


def test_a_silent_monitors_threshold_alerts_are_inhibited(tmp_path):
    clock = FakeClock(local_s("2026-11-27 10:00"))
    with DingTalkRobot(clock=clock) as ding, WeComRobot(clock=clock) as wecom, CitywatchWebhook() as archive:
        engine, routing = make_pair(tmp_path, _routes(ding, wecom, archive), clock)

        async def silent() -> None:
            # D00002 reads high PM10 once, then goes silent; D00003 at the same site keeps talking.
            engine.process_readings([reading("dust", "S0002", "D00002", clock, pm10=220.0),
                                     reading("dust", "S0002", "D00003", clock, pm10=40.0)])
            await pump(engine)
            for _ in range(4):  # 4 minutes later the deadman (3 x 60 s) fires for D00002
                clock.advance(60)
                engine.process_readings([reading("dust", "S0002", "D00003", clock, pm10=40.0, pm25=90.0)])
                engine.tick()
                await pump(engine)
            # The group was due after 30 s; hold it here to look at what the flush sends.
            routing.flush()
            await routing.deliver_pending()

        asyncio.run(silent())
        firing = {(a["rule"], a["device"]) for a in engine.list_alerts(state="firing")}
        engine.close()

    assert {("dust_pm10_high", "D00002"), ("dust_no_data", "D00002"), ("dust_pm25_high", "D00003")} <= firing
    texts = [r.body["markdown"]["text"] for r in ding.accepted]
    assert ding.rejected == [] and texts
    last = texts[-1]
    assert "dust_no_data" in last and "dust_pm25_high" in last  # other devices are not inhibited
    # The silent monitor's threshold alert never reached anyone after its source fired.
    assert "dust_pm10_high · S0002/D00002" not in last


def test_silences_keep_working_on_top_of_routing(tmp_path):
    clock = FakeClock(local_s("2026-11-27 10:00"))
    with DingTalkRobot(clock=clock) as ding, WeComRobot(clock=clock) as wecom, CitywatchWebhook() as archive:
        engine, routing = make_pair(tmp_path, _routes(ding, wecom, archive), clock)
        engine.silence(by="王工", ends_at=clock() + 600, site="S0005", comment="洒水车检修")

        async def go() -> None:
            engine.process_readings([reading("dust", "S0005", "D00005", clock, pm10=220.0)])
            await pump(engine)
            clock.advance(31)
            routing.flush()
            await routing.deliver_pending()
            assert ding.accepted == []  # silenced: the routing stage never saw it
            clock.advance(600)  # the silence ends; the engine tells the still-firing alert now
            engine.process_readings([reading("dust", "S0005", "D00005", clock, pm10=220.0)])
            engine.tick()
            await pump(engine)
            clock.advance(31)
            routing.flush()
            await routing.deliver_pending()

        asyncio.run(go())
        engine.close()
    assert len(ding.accepted) == 1 and "dust_pm10_high · S0005/D00005" in ding.accepted[0].body["markdown"]["text"]
