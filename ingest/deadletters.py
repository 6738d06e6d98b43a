"""The dead-letter store: every rejected input, raw bytes and all, with every reason.

SQLite under `CW_DATA_DIR` (WAL, synchronous=FULL): `add_many` commits one transaction per
group commit, before the inputs are acknowledged. `replay` runs stored messages through
the current decoder (after a registry or rule fix) and marks those that now pass.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from citywatch.model import RawMessage

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

    def to_json(self, *, max_payload: int = 4096) -> dict:
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
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Ingest workers (processes) share this file: wait for each other's commits.
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def add_many(self, items: Iterable[tuple[RawMessage, Iterable[str]]]) -> int:
        rows = [(r.received_ms, r.source, r.topic, r.payload, json.dumps(list(reasons), ensure_ascii=False))
                for r, reasons in items]
        if not rows:
            return 0
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO deadletters (received_ms, source, topic, payload, reasons) VALUES (?,?,?,?,?)", rows)
            self._db.execute("COMMIT")
        return len(rows)

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
            return self._db.execute(q).fetchone()[0]

    def mark_replayed(self, ids: Iterable[int], when_ms: int) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE deadletters SET replayed_ms=? WHERE id=?", [(when_ms, i) for i in ids])
            self._db.execute("COMMIT")

    def update_reasons(self, item_id: int, reasons: Iterable[str]) -> None:
        with self._lock:
            self._db.execute("UPDATE deadletters SET reasons=? WHERE id=?",
                             (json.dumps(list(reasons), ensure_ascii=False), item_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()
