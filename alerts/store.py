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

A full disk (or an I/O error) never stops the engine and never loses a transition: a
write that fails with SQLITE_FULL / SQLITE_IOERR is rolled back (SQLite leaves the file
intact) and its statements are held in memory, in order, as one unit; every later write
queues behind them, so the order of transactions is kept. A thread retries every second
and writes them all, each unit in its own transaction, as soon as the disk takes them;
then `on_resumed` is called (the engine wakes its notification delivery). Meanwhile
`failing` says so (for /health and /metrics), the first failure and the recovery are
logged once each, and the outbox reads see the deliveries that are still held (so a
notification is never sent twice). Held writes are lost only if the process stops
before the disk has room again (then the stop says how many).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

log = logging.getLogger("citywatch.alerts.store")

_SQLITE_IOERR, _SQLITE_FULL = 10, 13
_MAX_HELD_WARN = 100_000


def is_storage_error(exc: BaseException) -> bool:
    """A write failed for lack of space or an I/O error (worth holding and retrying),
    not a bug in the statement."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    text = str(exc).lower()
    return "disk is full" in text or "disk i/o error" in text


class _NoCursor:
    """What a held (not yet written) statement returns instead of a cursor."""

    rowcount = -1
    lastrowid = None

    def fetchall(self) -> list:
        return []

    def fetchone(self) -> None:
        return None


_NO_CURSOR = _NoCursor()


def _frozen(params: Any) -> Any:
    """A copy of statement parameters (a held statement must not see later changes)."""
    if isinstance(params, dict):
        return dict(params)
    return tuple(params)


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


class AlertStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # A bounded WAL: checkpoint every 1 MiB (not 4) and cut the file back to that
            # size afterwards, so the window snapshots do not keep megabytes of a small
            # data disk that the spool needs.
            self._db.execute("PRAGMA wal_autocheckpoint=256")
            self._db.execute("PRAGMA journal_size_limit=1048576")
            self._db.executescript(_SCHEMA)
        # Writes the disk did not take yet: units (one transaction each) of (sql, params, many).
        self._held: deque[list[tuple[str, Any, bool]]] = deque()
        # Outbox updates among them, by seq: ("done", notifier) or ("retry", notifier, next_ms, attempts).
        self._outbox_held: dict[int, tuple] = {}
        self._held_since: float | None = None
        self._retrier: threading.Thread | None = None
        self._closed = False
        self.failing: str | None = None
        self.on_resumed: Callable[[], None] | None = None  # called (on the retry thread) once all are written

    @property
    def deferred_count(self) -> int:
        return len(self._held)

    def close(self) -> None:
        with self.lock:
            if self._held:
                self._write_held()
            if self._held:
                log.error("alert state: %d transaction(s) could not be written before the stop (the disk under %s "
                          "is still full) and are lost", len(self._held), self.path.parent)
            self._closed = True
            self._db.close()

    # -- held writes (disk full) ------------------------------------------------------------
    def _hold(self, unit: list[tuple[str, Any, bool]], exc: BaseException | None) -> None:
        """Keep `unit` (its transaction was rolled back or never begun) for the retry thread."""
        self._held.append(unit)
        if exc is not None:
            self._checkpoint_wal()
        if self._held_since is None:
            self._held_since = time.monotonic()
            log.error("alert state %s cannot be written (%s): transitions and notifications are kept in memory, "
                      "in order, and written as soon as the disk has room", self.path, exc)
        if len(self._held) == _MAX_HELD_WARN:
            log.error("alert state: %d transactions held in memory; free disk space under %s", len(self._held),
                      self.path.parent)
        self.failing = f"disk full: {len(self._held)} write(s) held in memory" + (f" ({exc})" if exc else "")
        if self._retrier is None or not self._retrier.is_alive():
            self._retrier = threading.Thread(target=self._retry_loop, name="cw-alert-store-retry", daemon=True)
            self._retrier.start()

    def _write_held(self) -> bool:
        """Write the held units in order (caller holds the lock); True when none is left."""
        while self._held:
            unit = self._held[0]
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, params, many in unit:
                    (self._db.executemany if many else self._db.execute)(sql, params)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if is_storage_error(exc):
                    self.failing = f"disk full: {len(self._held)} write(s) held in memory ({exc})"
                    self._checkpoint_wal()
                    return False
                # It failed before only for lack of space; a statement error now is a bug: say so, go on.
                log.exception("alert state: dropping a held transaction that no longer applies")
            self._held.popleft()
        self._outbox_held.clear()
        if self._held_since is not None:
            log.warning("alert state written again after %.0f s; every held transition is stored",
                        time.monotonic() - self._held_since)
            self._held_since = None
        self.failing = None
        return True

    def _checkpoint_wal(self) -> None:
        """On a full disk: fold the WAL into the database and cut it to nothing, giving
        its space back (its pages mostly exist in the file already)."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass

    def _retry_loop(self) -> None:
        while True:
            time.sleep(1.0)
            with self.lock:
                if self._closed:
                    return
                if not self._held or self._write_held():
                    break
        callback = self.on_resumed
        if callback is not None:
            try:
                callback()
            except Exception:  # noqa: BLE001 - a wake-up must not kill the thread's report
                log.exception("alert store: resume callback failed")

    def _write(self, sql: str, params: Sequence[Any] = ()) -> bool:
        """One write statement outside a transaction; False when it is held for later."""
        with self.lock:
            unit = [(sql, _frozen(params), False)]
            if self._held and not self._write_held():
                self._hold(unit, None)
                return False
            try:
                self._db.execute(sql, params)
                return True
            except sqlite3.Error as exc:
                if not is_storage_error(exc):
                    raise
                self._hold(unit, exc)
                return False

    # -- transactions --------------------------------------------------------------------
    def transaction(self) -> "_Tx":
        return _Tx(self)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """A write statement (use `query` to read): on a full disk it is held and retried."""
        with self.lock:
            if sql.lstrip()[:6].upper() == "SELECT":
                return self._db.execute(sql, params)
            self._write(sql, params)
            return _NO_CURSOR

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self._db.execute(sql, params).fetchall()

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
    def next_outbox(self, notifier: str) -> OutboxRow | None:
        with self.lock:
            held = self._outbox_held
            done = sum(1 for h in held.values() if h[0] == "done" and h[1] == notifier)
            rows = self.query(
                "SELECT * FROM outbox WHERE notifier=? AND delivered_ms IS NULL AND failed=0 ORDER BY seq LIMIT ?",
                (notifier, 1 + done))
            for r in rows:
                h = held.get(r["seq"])
                if h is not None and h[0] == "done":
                    continue  # delivered (or given up) already; the disk has not taken that yet
                attempts, next_ms = r["attempts"], r["next_ms"]
                if h is not None:
                    next_ms, attempts = h[2], attempts + h[3]
                return OutboxRow(r["seq"], r["notifier"], r["event"], r["alert_id"], json.loads(r["payload"]),
                                 r["created_ms"], attempts, next_ms)
            return None

    def _outbox_update(self, seq: int, sql: str, params: Sequence[Any], held: tuple) -> None:
        with self.lock:
            if not self._write(sql, params):
                row = self._db.execute("SELECT notifier FROM outbox WHERE seq=?", (seq,)).fetchone()
                notifier = row["notifier"] if row is not None else ""
                if held[0] == "retry":
                    before = self._outbox_held.get(seq)
                    tries = (before[3] if before is not None and before[0] == "retry" else 0) + 1
                    self._outbox_held[seq] = ("retry", notifier, held[1], tries)
                else:
                    self._outbox_held[seq] = ("done", notifier)

    def outbox_delivered(self, seq: int, now_ms: int, detail: str = "") -> None:
        self._outbox_update(seq, "UPDATE outbox SET delivered_ms=?, attempts=attempts+1, detail=? WHERE seq=?",
                            (now_ms, detail[:500], seq), ("done",))

    def outbox_retry(self, seq: int, next_ms: int, detail: str) -> None:
        self._outbox_update(seq, "UPDATE outbox SET attempts=attempts+1, next_ms=?, detail=? WHERE seq=?",
                            (next_ms, detail[:500], seq), ("retry", next_ms))

    def outbox_failed(self, seq: int, detail: str) -> None:
        self._outbox_update(seq, "UPDATE outbox SET attempts=attempts+1, failed=1, detail=? WHERE seq=?",
                            (detail[:500], seq), ("done",))

    def outbox_backlog(self) -> dict[str, int]:
        with self.lock:
            rows = self.query("SELECT notifier, COUNT(*) AS n FROM outbox WHERE delivered_ms IS NULL AND failed=0 "
                              "GROUP BY notifier")
            out = {r["notifier"]: r["n"] for r in rows}
            for h in self._outbox_held.values():
                if h[0] == "done" and out.get(h[1], 0) > 0:
                    out[h[1]] -= 1
            return out

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

    def pending_outbox(self, notifier: str, limit: int) -> list[OutboxRow]:
        """The oldest undelivered rows of one notifier, in order (a receiver merges them)."""
        rows = self.query(
            "SELECT * FROM outbox WHERE notifier=? AND delivered_ms IS NULL AND failed=0 ORDER BY seq LIMIT ?",
            (notifier, limit))
        return [OutboxRow(r["seq"], r["notifier"], r["event"], r["alert_id"], json.loads(r["payload"]),
                          r["created_ms"], r["attempts"], r["next_ms"]) for r in rows]

    def outbox_delivered_many(self, seqs: Sequence[int], now_ms: int, detail: str = "") -> None:
        """Rows merged into one message are delivered together, in one transaction."""
        with self.transaction() as tx:
            tx.executemany("UPDATE outbox SET delivered_ms=?, attempts=attempts+1, detail=? WHERE seq=?",
                           [(now_ms, detail[:500], s) for s in seqs])

    def outbox_failed_many(self, seqs: Sequence[int], detail: str) -> None:
        with self.transaction() as tx:
            tx.executemany("UPDATE outbox SET attempts=attempts+1, failed=1, detail=? WHERE seq=?",
                           [(detail[:500], s) for s in seqs])

    def outbox_sent_since(self, notifier: str, since_ms: int) -> list[int]:
        """Distinct delivery times of a notifier since `since_ms` (rows merged into one
        message share one): seeds a receiver's rate limiter after a restart."""
        rows = self.query("SELECT DISTINCT delivered_ms FROM outbox WHERE notifier=? AND delivered_ms >= ? "
                          "ORDER BY delivered_ms", (notifier, since_ms))
        return [r["delivered_ms"] for r in rows]


def _alert_row(r: sqlite3.Row) -> dict[str, Any]:
    """An `alerts` row as a dict, `value` and `threshold` decoded from their JSON."""
    row = dict(r)
    row["value"] = json.loads(row["value"]) if row["value"] is not None else None
    row["threshold"] = json.loads(row["threshold"]) if row["threshold"] is not None else None
    return row


class _Tx:
    """`with store.transaction() as tx:` — BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error).

    On a full disk the transaction is rolled back and its statements (those run and those
    still to come in the block) are held by the store as one unit, written later in order;
    the block itself goes on as if it had succeeded."""

    def __init__(self, store: AlertStore):
        self.store = store
        self._stmts: list[tuple[str, Any, bool]] = []
        self._live = True
        self._exc: BaseException | None = None

    def __enter__(self) -> "_Tx":
        store = self.store
        store.lock.acquire()
        try:
            if store._held and not store._write_held():
                self._live = False  # queue behind what is held: transactions stay in order
            else:
                store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if not is_storage_error(exc):
                store.lock.release()
                raise
            self._fail(exc)
        except BaseException:
            store.lock.release()
            raise
        return self

    def _fail(self, exc: BaseException) -> None:
        db = self.store._db
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._live, self._exc = False, exc

    def __exit__(self, exc_type, exc, tb) -> None:
        store = self.store
        try:
            if exc_type is not None:
                if self._live:
                    store._db.execute("ROLLBACK")
                return
            if self._live:
                try:
                    store._db.execute("COMMIT")
                except sqlite3.Error as e:
                    if not is_storage_error(e):
                        raise
                    self._fail(e)
            if not self._live and self._stmts:
                store._hold(self._stmts, self._exc)
        finally:
            store.lock.release()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self._stmts.append((sql, _frozen(params), False))
        if self._live:
            try:
                return self.store._db.execute(sql, params)
            except sqlite3.Error as exc:
                if not is_storage_error(exc):
                    raise
                self._fail(exc)
        return _NO_CURSOR

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [_frozen(r) for r in rows]
        self._stmts.append((sql, rows, True))
        if self._live:
            try:
                self.store._db.executemany(sql, rows)
            except sqlite3.Error as exc:
                if not is_storage_error(exc):
                    raise
                self._fail(exc)

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
