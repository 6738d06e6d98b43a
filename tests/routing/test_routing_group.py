"""Groups: timing (group_wait, group_interval, repeat_interval), resolves, idempotence,
and a route file that changed under existing groups. Table of outbox rows per step."""

from __future__ import annotations

from types import SimpleNamespace
from zoneinfo import ZoneInfo

from alerts.build import build_alerting
from alerts.routing import labels_from
from alerts.routing.config import parse_routes
from alerts.routing.group import Grouper, outbox_name
from alerts.routing.inhibit import InhibitRule
from alerts.routing.tree import build_tree
from alerts.store import AlertStore

FILE = """\
receivers:
  - {name: office, type: webhook, url: "https://a.example/", secret: "0123456789abcdef0123456789abcdef"}
  - {name: other, type: webhook, url: "https://b.example/", secret: "0123456789abcdef0123456789abcdef"}
route:
  receiver: office
  group_by: [site]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 1h
"""
T0 = 1_795_744_800_000
S = 1000


def alert(aid: str, *, state: str = "firing", severity: str = "major", site: str = "S1") -> dict:
    return {"id": aid, "rule": f"rule_{aid}", "severity": severity, "state": state, "acked": False, "kind": "dust",
            "site": site, "device": "D1", "field": "pm10", "value": 200.0, "threshold": 150,
            "started_at": "2026-11-27T10:00:00+08:00", "resolved_at": None, "message": "m", "message_en": "m"}


def grouper(tmp_path, text: str = FILE, store: AlertStore | None = None) -> Grouper:
    cfg = parse_routes(text)
    store = store or AlertStore(tmp_path / "a.sqlite3")
    store.ensure_routing_schema()
    return Grouper(store, build_tree(cfg), [InhibitRule.from_config(r) for r in cfg.inhibit_rules],
                   labels_of=labels_from(None), tz=ZoneInfo("Asia/Shanghai"), receivers=[r.name for r in cfg.receivers])


def sent(g: Grouper, receiver: str = "office") -> list[list[tuple[str, str]]]:
    rows = g.store.pending_outbox(outbox_name(receiver), 1000)
    return [[(a["id"], a["state"]) for a in r.payload["alerts"]] for r in rows]


def test_timing_resolve_and_repeat(tmp_path):
    g = grouper(tmp_path)
    g.add(alert("a"), T0)
    g.add(alert("b"), T0 + 10 * S)
    assert g.flush_due(T0 + 29 * S) == set() and sent(g) == []            # inside group_wait
    assert g.flush_due(T0 + 30 * S) == {"office"}                         # one message, both alerts
    assert sent(g) == [[("a", "firing"), ("b", "firing")]]
    g.add(alert("c"), T0 + 40 * S)
    assert g.flush_due(T0 + 60 * S) == set()                              # waits for group_interval
    assert g.flush_due(T0 + 330 * S) == {"office"}                        # 30 s + 5 min
    assert sent(g)[-1] == [("a", "firing"), ("b", "firing"), ("c", "firing")]
    g.add(alert("a", state="resolved"), T0 + 400 * S)
    assert g.flush_due(T0 + 630 * S) == {"office"}
    assert sent(g)[-1] == [("b", "firing"), ("c", "firing"), ("a", "resolved")]
    assert g.flush_due(T0 + 930 * S) == set()                             # unchanged: no message
    assert g.flush_due(T0 + 630 * S + 3600 * S) == {"office"}             # repeat_interval
    assert sent(g)[-1] == [("b", "firing"), ("c", "firing")]
    assert len(sent(g)) == 4


def test_escalation_sends_again_ack_does_not_and_acked_groups_do_not_repeat(tmp_path):
    g = grouper(tmp_path)
    g.add(alert("a"), T0)
    g.flush_due(T0 + 30 * S)
    g.add({**alert("a"), "acked": True}, T0 + 60 * S)
    assert g.flush_due(T0 + 330 * S) == set()
    g.add({**alert("a", severity="critical"), "acked": True}, T0 + 400 * S)
    assert g.flush_due(T0 + 630 * S) == {"office"}
    assert len(sent(g)) == 2
    assert g.flush_due(T0 + 630 * S + 3600 * S) == set()  # all acknowledged: no repeat


def test_fired_and_resolved_within_group_wait_is_never_told(tmp_path):
    g = grouper(tmp_path)
    g.add(alert("a"), T0)
    g.add(alert("a", state="resolved"), T0 + 5 * S)
    assert g.flush_due(T0 + 30 * S) == set() and sent(g) == []
    assert g.next_due_ms() is None  # the empty group is gone


def test_the_same_change_handed_over_twice_is_one_alert_in_one_group(tmp_path):
    g = grouper(tmp_path)
    g.add(alert("a"), T0)
    g.add(alert("a"), T0 + 1 * S)  # the engine outbox re-delivers after a crash
    g.flush_due(T0 + 31 * S)
    assert sent(g) == [[("a", "firing")]]


def test_groups_of_a_route_that_no_longer_exists_are_dropped(tmp_path):
    store = AlertStore(tmp_path / "a.sqlite3")
    g = grouper(tmp_path, FILE, store)
    g.add(alert("a"), T0)
    changed = FILE.replace("receiver: office", "receiver: other")
    g2 = grouper(tmp_path, changed, store)  # restarted with another route file
    assert g2.flush_due(T0 + 30 * S) == set()
    assert sent(g2, "office") == [] and store.query("SELECT * FROM route_groups") == []


def test_without_a_route_file_nothing_changes(tmp_path):
    settings = SimpleNamespace(rule_pack="default", rules_dir=None, alert_state_path=tmp_path / "a.sqlite3", tz="Asia/Shanghai")
    engine, tasks = build_alerting(settings, mqtt=False)
    try:
        assert len(tasks) == 1 and not hasattr(engine, "routing")
        assert [n.name for n in engine._notifiers] == []
        assert engine.store.query("SELECT name FROM sqlite_master WHERE name LIKE 'route_%'") == []
    finally:
        for t in tasks:
            t.close()
        engine.close()
