"""Aggregation groups: many alert changes in, one notification per group out.

Alertmanager's timing: a new group waits `group_wait` to collect its first alerts, then is
looked at every `group_interval`; it is sent when what it would say changed (an alert
started firing, resolved or escalated), or, unchanged but still firing and not all
acknowledged, every `repeat_interval`. Inhibited alerts are left out at flush time. A resolve is told only in
the groups that were told of the firing.

State lives in SQLite (`route_groups`, `route_group_alerts`, see store.py). Lifecycle
promise: a flush writes the receiver's outbox row and the group's new state in one
transaction, so after a SIGKILL a group notification is either queued or its flush never
happened; never lost, never queued twice. While the store holds writes on a full disk
(store.py), groups neither take changes nor flush: they wait until the disk has room.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from alerts.routing.inhibit import FiringAlert, Inhibitor, InhibitRule
from alerts.routing.tree import Route

LabelsOf = Callable[[Mapping[str, Any]], dict[str, str]]
_SEVERITY_ORDER = {"critical": 0, "major": 1, "warning": 2, "info": 3}


def outbox_name(receiver: str) -> str:
    """The outbox `notifier` column of a receiver's group notifications."""
    return f"receiver:{receiver}"


def group_key(route: Route, labels: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    values = {k: labels.get(k, "") for k in route.group_by}
    return f"{route.path}|{route.receiver}|{json.dumps(values, sort_keys=True, ensure_ascii=False)}", values


class Grouper:
    def __init__(self, store: Any, tree: Route, inhibit_rules: Sequence[InhibitRule], *, labels_of: LabelsOf,
                 tz: ZoneInfo, receivers: Sequence[str]):
        self.store = store
        self.tree = tree
        self.inhibit_rules = tuple(inhibit_rules)
        self.labels_of = labels_of
        self.tz = tz
        self.receivers = frozenset(receivers)
        self._routes: dict[str, Route] = {}

        def index(r: Route) -> None:
            self._routes[r.path] = r
            for c in r.children:
                index(c)

        index(tree)

    def route(self, labels: Mapping[str, str], now_ms: int) -> list[Route]:
        local = datetime.fromtimestamp(now_ms / 1000, self.tz)
        return self.tree.match(labels, local.hour * 60 + local.minute)

    # -- in: one alert change -----------------------------------------------------------
    def add(self, alert: Mapping[str, Any], now_ms: int) -> bool:
        """Record an alert's latest state in its groups (idempotent: the outbox may hand
        the same change over twice after a crash). False: not now, the store holds writes
        (a full disk) and the groups read from it would be stale; hand it over again."""
        if self.store.deferred_count:
            return False
        labels = self.labels_of(alert)
        aid = str(alert["id"])
        payload = json.dumps(dict(alert), ensure_ascii=False)
        labels_json = json.dumps(labels, sort_keys=True)
        # Reads first, then a write-only transaction: a store that holds writes on a full
        # disk (and answers reads inside a held transaction with nothing) stays correct.
        keys = {r["key"] for r in self.store.query("SELECT key FROM route_group_alerts WHERE alert_id=?", (aid,))}
        new_groups = []
        if alert.get("state") == "firing":
            for route in self.route(labels, now_ms):
                key, values = group_key(route, labels)
                keys.add(key)
                new_groups.append((key, route.path, route.receiver, json.dumps(values, ensure_ascii=False), now_ms,
                                   now_ms + int(route.group_wait_s * 1000)))
        with self.store.transaction() as tx:
            tx.executemany("INSERT OR IGNORE INTO route_groups (key, route, receiver, labels, created_ms, "
                           "next_flush_ms) VALUES (?,?,?,?,?,?)", new_groups)
            tx.executemany("INSERT INTO route_group_alerts (key, alert_id, payload, labels, updated_ms) "
                           "VALUES (?,?,?,?,?) ON CONFLICT(key, alert_id) DO UPDATE SET payload=excluded.payload, "
                           "labels=excluded.labels, updated_ms=excluded.updated_ms",
                           [(key, aid, payload, labels_json, now_ms) for key in sorted(keys)])
        return True

    # -- out: due groups become outbox rows ------------------------------------------------
    def next_due_ms(self) -> int | None:
        rows = self.store.query("SELECT MIN(next_flush_ms) AS t FROM route_groups")
        return rows[0]["t"] if rows and rows[0]["t"] is not None else None

    def _inhibitor(self) -> Inhibitor:
        if not self.inhibit_rules:
            return Inhibitor((), ())
        rows = self.store.query("SELECT id, kind, site, device, rule, severity, field FROM alerts "
                                "WHERE state='firing'")
        return Inhibitor(self.inhibit_rules, [FiringAlert(r["id"], self.labels_of(dict(r))) for r in rows])

    def flush_due(self, now_ms: int) -> set[str]:
        """Flush every group that is due; returns the receivers that got a new outbox row.
        Nothing while the store holds writes on a full disk: its reads do not see them, so
        a group held as flushed would look due again and be queued (and sent) twice."""
        if self.store.deferred_count:
            return set()
        due = self.store.query("SELECT * FROM route_groups WHERE next_flush_ms <= ? ORDER BY next_flush_ms, key",
                               (now_ms,))
        if not due:
            return set()
        inhibitor = self._inhibitor()
        queued: set[str] = set()
        for g in due:
            if self._flush(g, inhibitor, now_ms):
                queued.add(g["receiver"])
        return queued

    def _flush(self, g: Any, inhibitor: Inhibitor, now_ms: int) -> bool:
        key, receiver = g["key"], g["receiver"]
        route = self._routes.get(g["route"])
        if route is None or route.receiver != receiver or receiver not in self.receivers:
            # The route file changed since this group was made: its route is gone.
            with self.store.transaction() as tx:
                tx.execute("DELETE FROM route_group_alerts WHERE key=?", (key,))
                tx.execute("DELETE FROM route_groups WHERE key=?", (key,))
            return False
        # Reads first, then one write-only transaction (see add()).
        members = [(r["alert_id"], json.loads(r["payload"]), json.loads(r["labels"]), bool(r["notified"]))
                   for r in self.store.query("SELECT * FROM route_group_alerts WHERE key=?", (key,))]
        firing = [(aid, p) for aid, p, labels, _ in members
                  if p.get("state") == "firing" and not inhibitor.inhibited(aid, labels)]
        resolved = [(aid, p) for aid, p, _, told in members if p.get("state") != "firing" and told]
        never_told = [aid for aid, p, _, told in members if p.get("state") != "firing" and not told]
        items = sorted(firing, key=_order) + sorted(resolved, key=_order)
        # What the group says while firing; resolves are news by themselves and leave it.
        digest = hashlib.sha256(json.dumps(sorted((aid, p.get("severity")) for aid, p in firing))
                                .encode()).hexdigest() if firing else ""
        # Repeat an unchanged group only while someone still has to act: not once every
        # firing alert in it is acknowledged (as the engine stops its own re-sends on ack).
        repeat_due = any(not p.get("acked") for _, p in firing) and g["last_sent_ms"] is not None and \
            now_ms - g["last_sent_ms"] >= route.repeat_interval_s * 1000
        send = bool(resolved) or (bool(firing) and (digest != g["digest"] or repeat_due))
        gone = never_told + ([aid for aid, _ in resolved] if send else [])
        with self.store.transaction() as tx:
            if send:
                message = {"receiver": receiver, "group_key": key, "group_labels": json.loads(g["labels"]),
                           "status": "firing" if firing else "resolved", "firing": len(firing),
                           "resolved": len(resolved), "repeat": digest == g["digest"] and not resolved,
                           "alerts": [p for _, p in items], "created_ms": now_ms}
                tx.enqueue(outbox_name(receiver), "group", key, message, now_ms)
                tx.executemany("UPDATE route_group_alerts SET notified=1 WHERE key=? AND alert_id=?",
                               [(key, aid) for aid, _ in firing])
            tx.executemany("DELETE FROM route_group_alerts WHERE key=? AND alert_id=?", [(key, aid) for aid in gone])
            if len(members) == len(gone):
                tx.execute("DELETE FROM route_groups WHERE key=?", (key,))
            else:
                tx.execute("UPDATE route_groups SET next_flush_ms=?, last_flush_ms=?, last_sent_ms=?, digest=? "
                           "WHERE key=?",
                           (now_ms + int(route.group_interval_s * 1000), now_ms,
                            now_ms if send else g["last_sent_ms"], digest if send else g["digest"], key))
        return send


def _order(item: tuple[str, dict[str, Any]]) -> tuple[int, str, str]:
    p = item[1]
    return _SEVERITY_ORDER.get(p.get("severity", ""), 9), p.get("started_at") or "", item[0]
