"""The routing tree: matching (regex too), `continue`, inheritance and active_time."""

from __future__ import annotations

import pytest

from alerts.routing.config import parse_routes
from alerts.routing.tree import build_tree

FILE = """\
receivers:
  - {name: default, type: webhook, url: "https://a.example/"}
  - {name: dust, type: webhook, url: "https://b.example/"}
  - {name: east, type: webhook, url: "https://c.example/"}
  - {name: night, type: webhook, url: "https://d.example/"}
  - {name: crit, type: webhook, url: "https://e.example/"}
route:
  receiver: default
  group_by: [site]
  group_wait: 10s
  routes:
    - match: {kind: dust}
      receiver: dust
      continue: true
      group_by: [site, rule]
      routes:
        - {match: {district: east}, receiver: east, group_wait: 1m}
    - {match_re: {site: "S00[0-4][0-9]"}, receiver: crit, match: {severity: critical}}
    - {match: {kind: heating}, receiver: night, active_time: ["22:00-08:00", "12:00-13:00"]}
"""
NOON, NIGHT, MORNING = 12 * 60 + 30, 3 * 60, 9 * 60


def labels(**kw):
    base = {"kind": "dust", "site": "S0001", "district": "west", "device": "D1", "rule": "r", "severity": "major",
            "field": "pm10"}
    return {**base, **kw}


@pytest.fixture(scope="module")
def tree():
    return build_tree(parse_routes(FILE))


@pytest.mark.parametrize("alert, minute, receivers", [
    # dust goes to the dust office; continue, but no sibling matches (major): not to the default
    (labels(), NOON, ["dust"]),
    # a child that matches wins inside its parent
    (labels(district="east"), NOON, ["east"]),
    # continue: the critical dust alert at S0012 also reaches crit
    (labels(severity="critical", site="S0012"), NOON, ["dust", "crit"]),
    # regexes are anchored: XS0012 does not match S00[0-4][0-9]
    (labels(kind="water", severity="critical", site="XS0012"), NOON, ["default"]),
    (labels(kind="water", severity="critical", site="S0050"), NOON, ["default"]),
    (labels(kind="water", severity="critical", site="S0049"), NOON, ["crit"]),
    # active_time crossing midnight, and a second interval at noon
    (labels(kind="heating"), NIGHT, ["night"]),
    (labels(kind="heating"), NOON, ["night"]),
    # outside active_time: falls through to the default receiver (not muted)
    (labels(kind="heating"), MORNING, ["default"]),
])
def test_match(tree, alert, minute, receivers):
    assert [r.receiver for r in tree.match(alert, minute)] == receivers


def test_settings_are_inherited(tree):
    dust, east = tree.children[0], tree.children[0].children[0]
    assert tree.group_wait_s == 10 and tree.group_interval_s == 300 and tree.repeat_interval_s == 4 * 3600
    assert dust.group_by == ("site", "rule") and dust.group_wait_s == 10
    assert east.group_by == ("site", "rule") and east.group_wait_s == 60
    assert tree.children[1].group_by == ("site",)


def test_public_names_are_pinned():
    import alerts.receivers
    import alerts.routing

    assert sorted(alerts.routing.__all__) == [
        "GroupDispatcher", "Grouper", "RateLimiter", "Route", "RoutesFile", "Routing", "RoutingStage",
        "build_routing", "build_tree", "labels_from", "load_routes", "parse_routes"]
    assert sorted(alerts.receivers.__all__) == [
        "DingTalkReceiver", "EmailReceiver", "FeishuReceiver", "GroupBatch", "MqttGroupReceiver", "RECEIVERS", "Receiver",
        "SmsReceiver", "WeComReceiver", "WebhookGroupReceiver", "build_receiver", "dingtalk_sign", "feishu_sign"]
    for module in (alerts.routing, alerts.receivers):
        for name in module.__all__:
            assert hasattr(module, name), name
