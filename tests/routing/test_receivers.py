"""Each receiver against a local server that checks it the way the platform does
(signature, timestamp window, body schema, size and rate limits), and email against a
real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import email
import email.policy

import pytest
from aiosmtpd.controller import Controller

from alerts.receivers import GroupBatch, build_receiver
from alerts.receivers.dingtalk import dingtalk_sign
from alerts.routing.config import parse_routes
from alerts.testing import FakeClock
from platforms import CitywatchWebhook, DingTalkRobot, FeishuBot, SmsGateway, WeComRobot
from routing_helpers import DASHBOARD, local_s


def _alert(i: int, *, site: str = "S0001", state: str = "firing", severity: str = "major") -> dict:
    return {"id": f"a{i}", "rule": f"dust_rule_{i}", "severity": severity, "state": state, "acked": False,
            "kind": "dust", "site": site, "device": "D00001", "field": "pm10", "value": 162.4 + i, "threshold": 150,
            "started_at": "2026-11-27T10:00:00+08:00", "resolved_at": None,
            "message": f"PM10 10分钟均值 {162.4 + i} µg/m³ 超过设定值 150，立即停工降尘",
            "message_en": f"PM10 10-min mean {162.4 + i} above 150; stop work"}


def _group(site: str = "S0001", n: int = 2) -> dict:
    return {"receiver": "r", "group_key": f"0|r|{site}", "group_labels": {"site": site}, "status": "firing",
            "firing": n, "resolved": 0, "repeat": False, "alerts": [_alert(i, site=site) for i in range(n)],
            "created_ms": 0}


def _receiver(entry: str, clock=None):
    cfg = parse_routes(f"receivers:\n  - {entry}\nroute:\n  receiver: r\n").receivers[0]
    return build_receiver(cfg, dashboard_url=DASHBOARD, clock=clock or FakeClock(local_s("2026-11-27 10:01")))


def _send(receiver, *groups, seq: int = 1):
    async def go():
        try:
            return await receiver.send(GroupBatch(seq, tuple(groups), 0))
        finally:
            close = getattr(receiver, "aclose", None)
            if close:
                await close()

    return asyncio.run(go())


def test_dingtalk_sign_matches_the_documented_example_algorithm():
    # The documented Python sample: hmac(secret, f"{ts}\n{secret}", sha256) -> base64 -> quote_plus.
    import base64
    import hashlib
    import hmac

    ts, secret = 1764201600000, "SEC0123+/="
    expected = base64.b64encode(hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).digest())
    assert dingtalk_sign(secret, ts) == expected.decode()


def test_dingtalk_signed_markdown_is_accepted_and_a_wrong_secret_or_old_timestamp_is_not():
    clock = FakeClock(local_s("2026-11-27 10:01"))
    with DingTalkRobot(clock=clock) as ding:
        ok = _send(_receiver(f'{{name: r, type: dingtalk, url: "{ding.url}", secret: "{ding.secret}"}}', clock),
                   _group())
        assert ok.ok and len(ding.accepted) == 1
        wrong = _send(_receiver(f'{{name: r, type: dingtalk, url: "{ding.url}", secret: "SECwrong"}}', clock),
                      _group())
        assert not wrong.ok and wrong.retryable and "310000" in wrong.detail
        # A request signed 61 minutes ago (a skewed clock) is outside DingTalk's window.
        old = FakeClock(clock() - 3660)
        late = _send(_receiver(f'{{name: r, type: dingtalk, url: "{ding.url}", secret: "{ding.secret}"}}', old),
                     _group())
        assert not late.ok and "310000" in late.detail
        assert "tok123" not in wrong.detail + late.detail  # the token never appears in a detail
    assert len(ding.accepted) == 1 and len(ding.rejected) == 2


def test_wecom_markdown_and_its_4096_byte_limit_decides_how_many_groups_merge():
    clock = FakeClock(local_s("2026-11-27 10:01"))
    with WeComRobot(clock=clock) as wecom:
        r = _receiver(f'{{name: r, type: wecom, url: "{wecom.url}"}}', clock)
        groups = [_group(f"S{i:04d}", 3) for i in range(30)]
        fit = 1
        while fit < len(groups) and r.fits(groups[:fit + 1]):
            fit += 1
        assert 1 < fit < 30  # more than one group fits, not thirty
        assert _send(r, *groups[:fit]).ok
    assert wecom.rejected == [] and len(wecom.accepted) == 1
    content = wecom.accepted[0].body["markdown"]["content"]
    assert len(content.encode()) <= 4096 and f"{fit} 个分组" in content


def test_feishu_signed_interactive_card_and_a_stale_timestamp_is_refused():
    clock = FakeClock(local_s("2026-11-27 10:01"))
    with FeishuBot(clock=clock) as bot:
        entry = f'{{name: r, type: feishu, url: "{bot.url}", secret: "{bot.secret}", language: en}}'
        assert _send(_receiver(entry, clock), _group()).ok
        stale = _send(_receiver(entry, FakeClock(clock() - 3700)), _group())
        assert not stale.ok and "19021" in stale.detail
    card = bot.accepted[0].body["card"]
    assert card["header"]["template"] == "red" and "[firing] site S0001: 2 alerts" in card["header"]["title"]["content"]
    assert "dust_rule_0" in card["elements"][0]["text"]["content"]
    assert card["elements"][1]["actions"][0]["url"] == DASHBOARD


def test_sms_gateway_template_fills_phones_and_a_json_escaped_text():
    with SmsGateway() as gw:
        entry = (f'{{name: r, type: sms, url: "{gw.url}", headers: {{X-Api-Key: "{gw.apikey}"}}, '
                 f'phones: ["13900000000", "13700000000"], '
                 "body: '{\"mobiles\": $phones_json, \"content\": \"$text\"}', ok_when: '\"code\": 0'}")
        group = _group()
        group["alerts"][0]["message"] = 'PM10 "超标" \\ 停工'  # quotes and a backslash stay valid JSON
        assert _send(_receiver(entry), group).ok
        bad = _send(_receiver(entry.replace(gw.apikey, "wrong")), _group())
        assert not bad.ok and bad.detail == "r: HTTP 401"
    body = gw.accepted[0].body
    assert body["mobiles"] == ["13900000000", "13700000000"]
    assert 'PM10 "超标" \\ 停工' in body["content"] and len(body["content"]) <= 500


def test_webhook_receiver_posts_one_signed_group():
    with CitywatchWebhook() as hook:
        r = _receiver(f'{{name: r, type: webhook, url: "{hook.url}", secret: "{hook.secret}"}}')
        assert _send(r, _group(), seq=42).ok
    body = hook.accepted[0].body
    assert hook.accepted[0].headers["x-citywatch-delivery"] == "42"
    assert body["event"] == "group" and body["alert"]["group_labels"] == {"site": "S0001"}
    assert len(body["alert"]["alerts"]) == 2 and body["alert"]["dashboard_url"] == DASHBOARD


class _Inbox:
    def __init__(self):
        self.messages: list[email.message.Message] = []
        self.refuse: int | None = None

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return f"{self.refuse} try again later"
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.rcpt = list(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def smtpd():
    import socket

    with socket.socket() as s:  # a free port (the controller's readiness check needs a real one)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = _Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield inbox, port
    finally:
        ctl.stop()


def test_email_over_smtp_reaches_a_real_smtp_server(smtpd):
    inbox, port = smtpd
    entry = (f"{{name: r, type: email, smtp_host: 127.0.0.1, smtp_port: {port}, tls: none, "
             "from: citywatch@example.gov.cn, to: [office@example.gov.cn]}")
    assert _send(_receiver(entry), _group(), _group("S0002"), seq=7).ok
    inbox.refuse = 451
    later = _send(_receiver(entry), _group())
    assert not later.ok and later.retryable and "451" in later.detail
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert inbox.rcpt == ["office@example.gov.cn"]
    assert "2 个分组" in msg["Subject"] and "citywatch-r-7" in msg["Message-ID"]
    text = msg.get_content()
    assert "站点 S0001" in text and "站点 S0002" in text and DASHBOARD in text


def test_plain_smtp_to_a_public_host_is_refused_by_the_file():
    from citywatch.errors import ConfigError

    with pytest.raises(ConfigError, match="loopback SMTP relay"):
        parse_routes("receivers:\n  - {name: r, type: email, smtp_host: smtp.example.com, tls: none, "
                     "from: a@b.c, to: [d@e.f]}\nroute:\n  receiver: r\n")


def test_a_group_too_big_for_one_wecom_message_is_shortened_not_refused():
    clock = FakeClock(local_s("2026-11-27 10:01"))
    with WeComRobot(clock=clock) as wecom:
        r = _receiver(f'{{name: r, type: wecom, url: "{wecom.url}"}}', clock)
        huge = _group("S0001", 40)
        for a in huge["alerts"]:
            a["message"] += "，" + "请立即组织洒水降尘并上报处置结果" * 4  # long messages: far over 4 KB in full
        assert not r.fits([huge])
        assert _send(r, huge).ok
    assert wecom.rejected == []
    content = wecom.accepted[0].body["markdown"]["content"]
    assert len(content.encode()) <= 4096 and "dust_rule_0 " in content and "见看板" in content


def test_mqtt_receiver_publishes_the_group_on_the_real_broker(broker):
    import json as _json
    import time

    import paho.mqtt.client as mqtt

    from citywatch.settings import MqttAddress

    got: list[tuple[str, bytes, int, bool]] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="routing-mqtt-listener")
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.qos, bool(m.retain)))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("citywatch/alert-groups/#", qos=1)
    sub.loop_start()
    cfg = parse_routes("receivers:\n  - {name: wall, type: mqtt}\nroute:\n  receiver: wall\n").receivers[0]
    r = build_receiver(cfg, dashboard_url=DASHBOARD, clock=FakeClock(), mqtt=MqttAddress.parse(broker.url))
    try:
        deadline = time.monotonic() + 20
        while not r._client.is_connected():
            assert time.monotonic() < deadline, "the receiver did not connect"
            time.sleep(0.05)
        assert _send(r, _group(), seq=5).ok
        deadline = time.monotonic() + 20
        while not got:
            assert time.monotonic() < deadline, "nothing arrived"
            time.sleep(0.05)
    finally:
        sub.loop_stop()
        sub.disconnect()
    topic, payload, qos, retained = got[0]
    body = _json.loads(payload)
    assert topic == "citywatch/alert-groups/wall" and qos == 1 and not retained
    assert body["seq"] == 5 and body["group_labels"] == {"site": "S0001"} and len(body["alerts"]) == 2


def test_mqtt_receiver_may_not_use_the_per_alert_topics():
    from citywatch.errors import ConfigError

    with pytest.raises(ConfigError, match="per-alert contract"):
        parse_routes("receivers:\n  - {name: w, type: mqtt, topic: alerts/x}\nroute:\n  receiver: w\n")
