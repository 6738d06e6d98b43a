"""The dead-letter store: every rejected input, raw bytes and all, with every reason.

SQLite under `CW_DATA_DIR` (WAL, synchronous=FULL): `add_many` commits one transaction per
group commit, before the inputs are acknowledged. `replay` runs stored messages through
the current decoder (after a registry or rule fix) and marks those that now pass.

The store has limits of its own, so that garbage can never fill the disk the spool
needs: a size quota (`max_bytes`: the database's pages in use) and a retention
(`retention_s`). Past either, the oldest rows are evicted — past the quota down to 90 %
of it, so that eviction happens in chunks rather than on every commit. Each eviction is
counted (`citywatch_deadletters_evicted_total{reason=quota|retention}`) and the first of
each kind is logged. Pages freed by eviction are reused by later rows, so the file stays
at about the quota; after a retention sweep they are given back to the disk (new files
use incremental auto-vacuum).

A write that fails (disk full, I/O error) raises `DeadLetterError` with the transaction
rolled back: the committer retries it and acknowledges nothing meanwhile.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from citywatch import sqlite
from citywatch.errors import CitywatchError
from citywatch.model import RawMessage

if TYPE_CHECKING:
    from ingest.metrics import IngestMetrics

log = logging.getLogger("citywatch.ingest.deadletters")
_T = TypeVar("_T")


class DeadLetterError(CitywatchError):
    """The dead-letter store could not write (disk full, I/O error); nothing was written."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deadletters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    reasons     TEXT    NOT NULL,
    replayed_ms INTEGER
);
CREATE INDEX IF NOT EXISTS deadletters_pending ON deadletters (replayed_ms, id);
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    received_ms: int
    source: str
    topic: str
    payload: bytes
    reasons: tuple[str, ...]
    replayed_ms: int | None

    @property
    def raw(self) -> RawMessage:
        return RawMessage(self.topic, self.payload, self.received_ms, self.source)

    def shown_payload(self) -> bytes:
        """The payload as people may see it: HJ 212 passwords masked (the stored bytes stay
        whole so that a replay can check the password again)."""
        if self.source == "hj212":
            from ingest.hj212.redact import redact_pw

            return redact_pw(self.payload)
        return self.payload

    def to_json(self, *, max_payload: int = 4096) -> dict[str, object]:
        text = self.shown_payload()[:max_payload].decode("utf-8", errors="backslashreplace")
        return {
            "id": self.id,
            "received_ms": self.received_ms,
            "source": self.source,
            "topic": self.topic,
            "payload": text,
            "payload_bytes": len(self.payload),
            "reasons": list(self.reasons),
            "replayed_ms": self.replayed_ms,
        }


class DeadLetterStore:
    def __init__(self, path: Path, *, max_bytes: int | None = None, retention_s: float | None = None,
                 metrics: IngestMetrics | None = None, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Ingest workers (processes) share this file: wait for each other's commits. An old
        # file keeps its free pages for reuse; a new one gives a retention sweep's back.
        self._db = sqlite.connect(path, busy_timeout_ms=30000, incremental_vacuum=True)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._page_size: int = self._db.execute("PRAGMA page_size").fetchone()[0]
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self._metrics = metrics
        self._clock = clock
        self._logged: set[str] = set()
        self.evicted = {"quota": 0, "retention": 0}
        self.failing: str | None = None  # the last write error while writes fail
        if max_bytes is not None or retention_s is not None:
            try:
                self.maintain()
            except DeadLetterError as exc:  # a full disk at start: the committer will say so
                log.error("dead-letter store maintenance failed at start: %s", exc)

    def add_many(self, items: Iterable[tuple[RawMessage, Iterable[str]]]) -> int:
        rows = [(r.received_ms, r.source, r.topic, r.payload, json.dumps(list(reasons), ensure_ascii=False))
                for r, reasons in items]
        if not rows:
            return 0
        with self._lock:
            if self.max_bytes is not None:
                # Room first (the oldest go), so that the file itself stays within the quota:
                # pages freed by the eviction are the ones these rows reuse.
                incoming = sum(len(r[2]) + len(r[3]) + len(r[4]) + 64 for r in rows)
                if self._used_bytes() + incoming > self.max_bytes:
                    self._evict_to_quota(incoming)
            self._write(lambda db: db.executemany(
                "INSERT INTO deadletters (received_ms, source, topic, payload, reasons) VALUES (?,?,?,?,?)", rows))
            if self.max_bytes is not None and self._used_bytes() > self.max_bytes:  # the estimate was short
                try:
                    self._evict_to_quota()
                except DeadLetterError:
                    pass  # the rows are stored: never raise now (a retry would store them twice)
        return len(rows)

    # -- limits ------------------------------------------------------------------------
    def used_bytes(self) -> int:
        """Bytes of the database's pages in use (the file less its free pages)."""
        with self._lock:
            return self._used_bytes()

    def _used_bytes(self) -> int:
        pages: int = self._db.execute("PRAGMA page_count").fetchone()[0]
        free: int = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    def maintain(self) -> None:
        """Apply the retention and the quota now (at start and every minute from the disk
        watch), and give the pages freed by a retention sweep back to the disk."""
        with self._lock:
            if self.retention_s is not None:
                cutoff = int((self._clock() - self.retention_s) * 1000)
                self._delete_oldest("received_ms < ?", (cutoff,), reason="retention")
            if self.max_bytes is not None and self._used_bytes() > self.max_bytes:
                self._evict_to_quota()
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            if free > 256 and free * 4 > pages:
                self._write(lambda db: db.execute("PRAGMA incremental_vacuum"), begin=False)

    def _evict_to_quota(self, incoming: int = 0) -> None:
        assert self.max_bytes is not None
        target = max(0, int(self.max_bytes * 0.9) - incoming)
        while (used := self._used_bytes()) > target:
            rows = self._db.execute("SELECT count(*) FROM deadletters").fetchone()[0]
            if not rows:
                break
            per_row = max(1, used // rows)
            n = self._delete_oldest(None, (), limit=min(rows, (used - target) // per_row + 1), reason="quota")
            if not n:
                break

    def _delete_oldest(self, where: str | None, args: tuple[object, ...], limit: int | None = None, *, reason: str) -> int:
        """Delete the oldest rows matching `where` (by id, in chunks), counting each chunk as
        it commits (a later chunk may fail on a full disk); return how many."""
        deleted = 0
        while True:
            chunk = 5000 if limit is None else min(5000, limit - deleted)
            if chunk <= 0:
                return deleted
            cond = f"WHERE {where} " if where else ""
            cur = self._write(lambda db: db.execute(
                f"DELETE FROM deadletters WHERE id IN (SELECT id FROM deadletters {cond}ORDER BY id LIMIT ?)",
                (*args, chunk)))
            deleted += cur.rowcount
            if cur.rowcount > 0:
                self._evicted(reason, cur.rowcount)
            if cur.rowcount < chunk:
                return deleted

    def _evicted(self, reason: str, n: int) -> None:
        self.evicted[reason] += n
        if self._metrics is not None:
            self._metrics.deadletters_evicted.labels(reason).inc(n)
        if reason not in self._logged:
            self._logged.add(reason)
            if reason == "quota":
                log.warning("dead-letter store %s reached its size quota of %.1f MB (CW_DEADLETTER_MAX_BYTES / "
                            "CW_DEADLETTER_MAX_PERCENT): evicted the %d oldest; further evictions are only "
                            "counted (citywatch_deadletters_evicted_total)", self.path, (self.max_bytes or 0) / 1e6, n)
            else:
                log.warning("dead-letter store %s: evicted %d dead letter(s) older than %.0f days "
                            "(CW_DEADLETTER_RETENTION_DAYS); further evictions are only counted "
                            "(citywatch_deadletters_evicted_total)", self.path, n, (self.retention_s or 0) / 86400)

    def _write(self, fn: Callable[[sqlite3.Connection], _T], *, begin: bool = True) -> _T:
        """Run `fn(db)` in a transaction; any SQLite error rolls back and raises DeadLetterError."""
        try:
            if begin:
                with sqlite.transaction(self._db):
                    result = fn(self._db)
            else:
                result = fn(self._db)
        except sqlite3.Error as exc:
            sqlite.checkpoint_wal(self._db)
            if self.failing is None:
                log.error("dead-letter store %s cannot write (%s); retrying, nothing is acknowledged meanwhile",
                          self.path, exc)
            self.failing = str(exc)
            if self._metrics is not None:
                self._metrics.storage_failing.labels("deadletters").set(1)
            raise DeadLetterError(f"dead-letter store {self.path}: {exc}") from exc
        if self.failing is not None:
            log.warning("dead-letter store %s writes again", self.path)
            self.failing = None
            if self._metrics is not None:
                self._metrics.storage_failing.labels("deadletters").set(0)
        return result

    def list(self, *, limit: int = 100, offset: int = 0, include_replayed: bool = False,
             after_id: int = 0) -> list[DeadLetter]:
        where = "id > ?" + ("" if include_replayed else " AND replayed_ms IS NULL")
        with self._lock:
            cur = self._db.execute(
                f"SELECT id, received_ms, source, topic, payload, reasons, replayed_ms FROM deadletters "
                f"WHERE {where} ORDER BY id LIMIT ? OFFSET ?", (after_id, limit, offset))
            rows = cur.fetchall()
        return [DeadLetter(r[0], r[1], r[2], r[3], bytes(r[4]), tuple(json.loads(r[5])), r[6]) for r in rows]

    def iter_pending(self, batch: int = 500) -> Iterator[DeadLetter]:
        last = 0
        while True:
            page = self.list(limit=batch, after_id=last)
            if not page:
                return
            yield from page
            last = page[-1].id

    def count(self, *, include_replayed: bool = False) -> int:
        q = "SELECT count(*) FROM deadletters" + ("" if include_replayed else " WHERE replayed_ms IS NULL")
        with self._lock:
            n: int = self._db.execute(q).fetchone()[0]
        return n

    def mark_replayed(self, ids: Iterable[int], when_ms: int) -> None:
        rows = [(when_ms, i) for i in ids]
        with self._lock:
            self._write(lambda db: db.executemany("UPDATE deadletters SET replayed_ms=? WHERE id=?", rows))

    def update_reasons(self, item_id: int, reasons: Iterable[str]) -> None:
        with self._lock:
            self._db.execute("UPDATE deadletters SET reasons=? WHERE id=?",
                             (json.dumps(list(reasons), ensure_ascii=False), item_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()
