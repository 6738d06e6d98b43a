"""Durable alert state in one SQLite file (`settings.alert_state_path`).

Tables: `alerts` (every alert, active and resolved), `rstate` (per rule x device
evaluation state: pending since, consecutive count, clear since, per-day episodes),
`devices` (watermark, last seen), `series` (window snapshots; a long window's minute
buckets in `series_buckets`, one row per hour), `outbox` (one row per
notification per notifier, delivered in `seq` order), `silences`, `rule_overrides`.

Lifecycle promise: a state transition and the outbox rows it causes are written in the
same transaction, so after a crash (SIGKILL) a notification is either queued or its
transition never happened — never a transition without its notification, never two.
WAL with synchronous=FULL; one connection guarded by a lock (the API may call from a
worker thread).

A full disk (or an I/O error) never stops the engine and never loses a transition: the
writes are held in memory, in order, and written once the disk has room (alerts/held.py).
Meanwhile the outbox reads see the held outbox updates, so a notification — the engine's
or a routing group's — is never sent twice, and a retried one keeps its backoff.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.held import HeldTransaction, HeldWritesDB

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
  id TEXT PRIMARY KEY, rule TEXT NOT NULL, kind TEXT NOT NULL, site TEXT NOT NULL,
  device TEXT NOT NULL, field TEXT, severity TEXT NOT NULL, state TEXT NOT NULL,
  acked INTEGER NOT NULL DEFAULT 0, acked_by TEXT, acked_ms INTEGER, ack_note TEXT,
  value TEXT, threshold TEXT, started_ms INTEGER NOT NULL, fired_ms INTEGER,
  resolved_ms INTEGER, message TEXT NOT NULL DEFAULT '', message_en TEXT NOT NULL DEFAULT '',
  notified INTEGER NOT NULL DEFAULT 0, escalated INTEGER NOT NULL DEFAULT 0,
  last_notified_ms INTEGER, occurrence INTEGER NOT NULL DEFAULT 1,
  count INTEGER NOT NULL DEFAULT 1, updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state, started_ms);
CREATE INDEX IF NOT EXISTS alerts_rule_device ON alerts(rule, device);
CREATE TABLE IF NOT EXISTS rstate (
  rule TEXT NOT NULL, device TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (rule, device)
);
CREATE TABLE IF NOT EXISTS devices (
  device TEXT PRIMARY KEY, kind TEXT NOT NULL, site TEXT NOT NULL,
  watermark_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
  device TEXT NOT NULL, field TEXT NOT NULL, ts BLOB NOT NULL, v BLOB NOT NULL,
  PRIMARY KEY (device, field)
);
CREATE TABLE IF NOT EXISTS series_buckets (
  device TEXT NOT NULL, field TEXT NOT NULL, chunk INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY (device, field, chunk)
);
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, notifier TEXT NOT NULL, event TEXT NOT NULL,
  alert_id TEXT NOT NULL, payload TEXT NOT NULL, created_ms INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL DEFAULT 0,
  delivered_ms INTEGER, failed INTEGER NOT NULL DEFAULT 0, detail TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(notifier, delivered_ms, failed, seq);
CREATE TABLE IF NOT EXISTS silences (
  id TEXT PRIMARY KEY, site TEXT, device TEXT, rule TEXT, starts_ms INTEGER NOT NULL,
  ends_ms INTEGER NOT NULL, created_by TEXT NOT NULL, comment TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rule_overrides (
  id TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_ms INTEGER NOT NULL
);
"""

ALERT_COLUMNS = ("id", "rule", "kind", "site", "device", "field", "severity", "state", "acked", "acked_by",
                 "acked_ms", "ack_note", "value", "threshold", "started_ms", "fired_ms", "resolved_ms",
                 "message", "message_en", "notified", "escalated", "last_notified_ms", "occurrence", "count",
                 "updated_ms")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    notifier: str
    event: str
    alert_id: str
    payload: dict[str, Any]
    created_ms: int
    attempts: int
    next_ms: int


@dataclass(slots=True)
class _HeldOutbox:
    """An outbox update the disk has not taken yet, as the outbox reads must see it."""

    notifier: str
    done: bool = False  # delivered or given up
    delivered_ms: int | None = None
    next_ms: int = 0
    tries: int = 0  # failed attempts not yet counted on disk


class AlertStore(HeldWritesDB):
    def __init__(self, path: Path | str):
        super().__init__(path, _SCHEMA)
        # Outbox updates among the held writes, by seq: the outbox reads apply them, so a
        # notification (an engine one or a routing group) is never sent twice.
        self._outbox_held: dict[int, _HeldOutbox] = {}

    def _all_written(self) -> None:
        self._outbox_held.clear()

    def transaction(self) -> "_Tx":
        return _Tx(self)

    # -- loading at start ----------------------------------------------------------------
    def load_rstate(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["rule"], r["device"]): json.loads(r["data"]) for r in self.query("SELECT * FROM rstate")}

    def load_active_alerts(self) -> list[dict[str, Any]]:
        return [_alert_row(r) for r in self.query("SELECT * FROM alerts WHERE state IN ('pending','firing')")]

    def load_devices(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM devices")

    def load_series(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM series")

    def load_series_buckets(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM series_buckets")

    def drop_series_buckets(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget the buckets of these (device, field)s (no long window reads them any more)."""
        for device, fld in keys:
            self.execute("DELETE FROM series_buckets WHERE device=? AND field=?", (device, fld))

    def load_silences(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM silences")]

    def load_rule_overrides(self) -> list[str]:
        """The JSON documents of the rules put through the API (`PUT /v1/rules/{id}`)."""
        return [r["doc"] for r in self.query("SELECT doc FROM rule_overrides")]

    # -- rules and silences (API writes, each its own statement) ---------------------------
    def put_rule_override(self, rule_id: str, doc: str, now_ms: int) -> None:
        self.execute("INSERT OR REPLACE INTO rule_overrides (id, doc, updated_ms) VALUES (?,?,?)",
                     (rule_id, doc, now_ms))

    def add_silence(self, s: dict[str, Any]) -> None:
        self.execute("INSERT INTO silences (id, site, device, rule, starts_ms, ends_ms, created_by, "
                     "comment, created_ms) VALUES (:id,:site,:device,:rule,:starts_ms,:ends_ms,"
                     ":created_by,:comment,:created_ms)", s)

    def end_silence(self, silence_id: str, ends_ms: int) -> None:
        self.execute("UPDATE silences SET ends_ms=? WHERE id=?", (ends_ms, silence_id))

    # -- alert queries (the API) -----------------------------------------------------------
    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM alerts WHERE id=?", (alert_id,))
        return _alert_row(rows[0]) if rows else None

    def list_alerts(self, *, state: str | None = None, site: str | None = None, severity: str | None = None,
                    device: str | None = None, rule: str | None = None, limit: int = 100,
                    offset: int = 0, sites: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Newest first. `state` is pending | firing | resolved | active (pending+firing).
        `sites` keeps only alerts of these sites (an API token's districts; empty: none)."""
        where, args = [], []
        if sites is not None:
            if not sites:
                return []
            where.append(f"site IN ({','.join('?' * len(sites))})")
            args.extend(sorted(sites))
        if state == "active":
            where.append("state IN ('pending','firing')")
        elif state:
            where.append("state=?")
            args.append(state)
        for col, val in (("site", site), ("severity", severity), ("device", device), ("rule", rule)):
            if val:
                where.append(f"{col}=?")
                args.append(val)
        sql = "SELECT * FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_ms DESC, id LIMIT ? OFFSET ?"
        args += [max(0, min(int(limit), 10000)), max(0, int(offset))]
        return [_alert_row(r) for r in self.query(sql, args)]

    # -- outbox ------------------------------------------------------------------------
    # Every read below applies the held outbox updates (`_outbox_held`): while the disk is
    # full, a row delivered (or given up) is not handed out again and a retried one keeps
    # its backoff.
    def next_outbox(self, notifier: str) -> OutboxRow | None:
        rows = self.pending_outbox(notifier, 1)
        return rows[0] if rows else None

    def pending_outbox(self, notifier: str, limit: int) -> list[OutboxRow]:
        """The oldest undelivered rows of one notifier, in order (a receiver merges them)."""
        with self.lock:
            held = self._outbox_held
            done = sum(1 for h in held.values() if h.done and h.notifier == notifier)
            out = []
            for r in self.query("SELECT * FROM outbox WHERE notifier=? AND delivered_ms IS NULL AND failed=0 "
                                "ORDER BY seq LIMIT ?", (notifier, limit + done)):
                h = held.get(r["seq"])
                if h is not None and h.done:
                    continue
                attempts, next_ms = r["attempts"], r["next_ms"]
                if h is not None:
                    attempts, next_ms = attempts + h.tries, h.next_ms
                out.append(OutboxRow(r["seq"], r["notifier"], r["event"], r["alert_id"], json.loads(r["payload"]),
                                     r["created_ms"], attempts, next_ms))
            return out[:limit]

    def _note_held(self, seqs: Sequence[int], *, delivered_ms: int | None = None, done: bool = True,
                   next_ms: int = 0) -> None:
        """Account for outbox updates of `seqs` that were held (caller holds the lock)."""
        marks = ",".join("?" * len(seqs))
        notifiers = {r["seq"]: r["notifier"]
                     for r in self._db.execute(f"SELECT seq, notifier FROM outbox WHERE seq IN ({marks})", seqs)}
        for seq in seqs:
            before = self._outbox_held.get(seq)
            tries = before.tries if before is not None else 0
            self._outbox_held[seq] = _HeldOutbox(notifiers.get(seq, ""), done, delivered_ms, next_ms,
                                                 tries if done else tries + 1)

    def _outbox_update(self, seq: int, sql: str, params: Sequence[Any], **held: Any) -> None:
        with self.lock:
            if not self._write(sql, params):
                self._note_held([seq], **held)

    def _outbox_update_many(self, seqs: Sequence[int], sql: str, rows: list[tuple], **held: Any) -> None:
        """Rows merged into one message are updated together, in one transaction."""
        with self.lock:
            with self.transaction() as tx:
                tx.executemany(sql, rows)
            if tx.held:
                self._note_held(seqs, **held)

    def outbox_delivered(self, seq: int, now_ms: int, detail: str = "") -> None:
        self.outbox_delivered_many([seq], now_ms, detail)

    def outbox_retry(self, seq: int, next_ms: int, detail: str) -> None:
        self._outbox_update(seq, "UPDATE outbox SET attempts=attempts+1, next_ms=?, detail=? WHERE seq=?",
                            (next_ms, detail[:500], seq), done=False, next_ms=next_ms)

    def outbox_failed(self, seq: int, detail: str) -> None:
        self.outbox_failed_many([seq], detail)

    def outbox_delivered_many(self, seqs: Sequence[int], now_ms: int, detail: str = "") -> None:
        sql = "UPDATE outbox SET delivered_ms=?, attempts=attempts+1, detail=? WHERE seq=?"
        if len(seqs) == 1:
            self._outbox_update(seqs[0], sql, (now_ms, detail[:500], seqs[0]), delivered_ms=now_ms)
        else:
            self._outbox_update_many(seqs, sql, [(now_ms, detail[:500], s) for s in seqs], delivered_ms=now_ms)

    def outbox_failed_many(self, seqs: Sequence[int], detail: str) -> None:
        sql = "UPDATE outbox SET attempts=attempts+1, failed=1, detail=? WHERE seq=?"
        if len(seqs) == 1:
            self._outbox_update(seqs[0], sql, (detail[:500], seqs[0]))
        else:
            self._outbox_update_many(seqs, sql, [(detail[:500], s) for s in seqs])

    def outbox_backlog(self) -> dict[str, int]:
        with self.lock:
            rows = self.query("SELECT notifier, COUNT(*) AS n FROM outbox WHERE delivered_ms IS NULL AND failed=0 "
                              "GROUP BY notifier")
            out = {r["notifier"]: r["n"] for r in rows}
            for h in self._outbox_held.values():
                if h.done and out.get(h.notifier, 0) > 0:
                    out[h.notifier] -= 1
            return out

    def outbox_sent_since(self, notifier: str, since_ms: int) -> list[int]:
        """Distinct delivery times of a notifier since `since_ms` (rows merged into one
        message share one): seeds a receiver's rate limiter after a restart."""
        with self.lock:
            rows = self.query("SELECT DISTINCT delivered_ms FROM outbox WHERE notifier=? AND delivered_ms >= ?",
                              (notifier, since_ms))
            held = {h.delivered_ms for h in self._outbox_held.values()
                    if h.notifier == notifier and h.delivered_ms is not None and h.delivered_ms >= since_ms}
            return sorted({r["delivered_ms"] for r in rows} | held)

    def prune(self, before_ms: int) -> None:
        """Drop delivered outbox rows and resolved alerts older than `before_ms`."""
        with self.transaction() as tx:
            tx.execute("DELETE FROM outbox WHERE (delivered_ms IS NOT NULL OR failed=1) AND created_ms < ?",
                       (before_ms,))
            tx.execute("DELETE FROM alerts WHERE state='resolved' AND resolved_ms < ?", (before_ms,))
            tx.execute("DELETE FROM silences WHERE ends_ms < ?", (before_ms,))

    # -- routing (alerts/routing): groups and the receivers' outbox rows ------------------
    def ensure_routing_schema(self) -> None:
        """Create the routing tables (only when CW_ROUTES_FILE is set; idempotent)."""
        with self.lock:
            self._db.executescript(_ROUTING_SCHEMA)


def _alert_row(r: sqlite3.Row) -> dict[str, Any]:
    """An `alerts` row as a dict, `value` and `threshold` decoded from their JSON."""
    row = dict(r)
    row["value"] = json.loads(row["value"]) if row["value"] is not None else None
    row["threshold"] = json.loads(row["threshold"]) if row["threshold"] is not None else None
    return row


class _Tx(HeldTransaction):
    """A transaction of the alert store (see HeldTransaction: on a full disk it is held)."""

    def upsert_alert(self, row: dict[str, Any]) -> None:
        """`row`: an alert's columns, `value` and `threshold` as they are (stored as JSON)."""
        row = {**row, "value": json.dumps(row["value"]), "threshold": json.dumps(row["threshold"])}
        cols = ",".join(ALERT_COLUMNS)
        marks = ",".join("?" for _ in ALERT_COLUMNS)
        self.execute(f"INSERT OR REPLACE INTO alerts ({cols}) VALUES ({marks})",
                     [row.get(c) for c in ALERT_COLUMNS])

    def put_device(self, device: str, kind: str, site: str, watermark_ms: int, last_seen_ms: int) -> None:
        self.execute("INSERT OR REPLACE INTO devices (device, kind, site, watermark_ms, last_seen_ms) "
                     "VALUES (?,?,?,?,?)", (device, kind, site, watermark_ms, last_seen_ms))

    def put_series(self, device: str, fld: str, ts: bytes, v: bytes) -> None:
        self.execute("INSERT OR REPLACE INTO series (device, field, ts, v) VALUES (?,?,?,?)", (device, fld, ts, v))

    def put_series_buckets(self, device: str, fld: str, hours: list[tuple[int, bytes]], drop_before: int | None) -> None:
        """A long window's minute buckets (alerts/buckets.py), one row per hour: the hours
        that changed, and the expired ones (below `drop_before`) dropped."""
        if drop_before is not None:
            self.execute("DELETE FROM series_buckets WHERE device=? AND field=? AND chunk<?", (device, fld, drop_before))
        self.executemany("INSERT OR REPLACE INTO series_buckets (device, field, chunk, data) VALUES (?,?,?,?)",
                         [(device, fld, c, data) for c, data in hours])

    def delete_alert(self, alert_id: str) -> None:
        self.execute("DELETE FROM alerts WHERE id=?", (alert_id,))

    def put_rstate(self, rule: str, device: str, data: dict[str, Any] | None) -> None:
        if data is None:
            self.execute("DELETE FROM rstate WHERE rule=? AND device=?", (rule, device))
        else:
            self.execute("INSERT OR REPLACE INTO rstate (rule, device, data) VALUES (?,?,?)",
                         (rule, device, json.dumps(data, separators=(",", ":"))))

    def enqueue(self, notifier: str, event: str, alert_id: str, payload: dict[str, Any], now_ms: int) -> None:
        self.execute("INSERT INTO outbox (notifier, event, alert_id, payload, created_ms, next_ms) "
                     "VALUES (?,?,?,?,?,?)",
                     (notifier, event, alert_id, json.dumps(payload, ensure_ascii=False), now_ms, 0))


# Routing (alerts/routing/group.py): one row per aggregation group (route x receiver x
# group_by values) and its alerts' latest payloads. A flush writes the receiver's outbox row
# and the group's new state in one transaction: a group notification is queued once.
_ROUTING_SCHEMA = """
CREATE TABLE IF NOT EXISTS route_groups (
  key TEXT PRIMARY KEY, route TEXT NOT NULL, receiver TEXT NOT NULL, labels TEXT NOT NULL,
  created_ms INTEGER NOT NULL, next_flush_ms INTEGER NOT NULL, last_flush_ms INTEGER,
  last_sent_ms INTEGER, digest TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS route_groups_due ON route_groups(next_flush_ms);
CREATE TABLE IF NOT EXISTS route_group_alerts (
  key TEXT NOT NULL, alert_id TEXT NOT NULL, payload TEXT NOT NULL, labels TEXT NOT NULL,
  notified INTEGER NOT NULL DEFAULT 0, updated_ms INTEGER NOT NULL, PRIMARY KEY (key, alert_id)
);
"""
