"""Writes a full disk did not take, held in memory and written once it does: the part of
the alert store (store.py) that keeps the engine going when the data disk is full.

A write that fails with SQLITE_FULL / SQLITE_IOERR is rolled back (SQLite leaves the file
intact) and its statements are held in memory, in order, as one unit; every later write
queues behind them, so the order of transactions is kept. A thread retries every second
and writes them all, each unit in its own transaction, as soon as the disk takes them;
then `on_resumed` is called. Meanwhile `failing` says so (for /health and /metrics), and
the first failure and the recovery are logged once each. Held writes are lost only if
the process stops before the disk has room again (then the stop says how many).

Reads do not see held writes: a reader that must (the outbox) keeps its own account of
what it wrote while `deferred_count` is not zero.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from citywatch import sqlite
from citywatch.sqlite import is_storage_error

log = logging.getLogger("citywatch.alerts.store")

_MAX_HELD_WARN = 100_000

Unit = list[tuple[str, Any, bool]]  # one transaction's statements: (sql, params, executemany?)


class _NoCursor:
    """What a held (not yet written) statement returns instead of a cursor."""

    rowcount = -1
    lastrowid = None

    def fetchall(self) -> list:
        return []

    def fetchone(self) -> None:
        return None


NO_CURSOR = _NoCursor()


def _frozen(params: Any) -> Any:
    """A copy of statement parameters (a held statement must not see later changes)."""
    if isinstance(params, dict):
        return dict(params)
    return tuple(params)


class HeldWritesDB:
    """One SQLite connection (WAL, synchronous=FULL) guarded by a lock (the API may call from
    a worker thread), whose writes are held on a full disk instead of failing."""

    def __init__(self, path: Path | str, schema: str):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite.connect(path)
        self._db.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        with self.lock:
            self._db.executescript(schema)
        self._held: deque[Unit] = deque()
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

    def give_back_wal(self) -> None:
        """Fold the WAL into the database and cut it to nothing: its pages (up to the 1 MiB
        `journal_size_limit` keeps) are space a nearly full disk needs for the spool."""
        with self.lock:
            if not self._closed:
                sqlite.checkpoint_wal(self._db)

    def _all_written(self) -> None:
        """Called (under the lock) once every held unit is on disk: drop any account of them."""

    def _hold(self, unit: Unit, exc: BaseException | None) -> None:
        """Keep `unit` (its transaction was rolled back or never begun) for the retry thread."""
        self._held.append(unit)
        if exc is not None:
            sqlite.checkpoint_wal(self._db)
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
                with sqlite.transaction(self._db):
                    for sql, params, many in unit:
                        (self._db.executemany if many else self._db.execute)(sql, params)
            except sqlite3.Error as exc:
                if is_storage_error(exc):
                    self.failing = f"disk full: {len(self._held)} write(s) held in memory ({exc})"
                    sqlite.checkpoint_wal(self._db)
                    return False
                # It failed before only for lack of space; a statement error now is a bug: say so, go on.
                log.exception("alert state: dropping a held transaction that no longer applies")
            self._held.popleft()
        self._all_written()
        if self._held_since is not None:
            log.warning("alert state written again after %.0f s; every held transition is stored",
                        time.monotonic() - self._held_since)
            self._held_since = None
        self.failing = None
        return True

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

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """A write statement (use `query` to read): on a full disk it is held and retried."""
        with self.lock:
            if sql.lstrip()[:6].upper() == "SELECT":
                return self._db.execute(sql, params)
            self._write(sql, params)
            return NO_CURSOR

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self._db.execute(sql, params).fetchall()


class HeldTransaction:
    """`with db.transaction() as tx:` — BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error).

    On a full disk the transaction is rolled back and its statements (those run and those
    still to come in the block) are held by the store as one unit, written later in order;
    the block itself goes on as if it had succeeded, and `held` says so afterwards."""

    def __init__(self, store: HeldWritesDB):
        self.store = store
        self._stmts: Unit = []
        self._live = True
        self._exc: BaseException | None = None
        self.held = False

    def __enter__(self):
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
        sqlite.rollback(self.store._db)
        self._live, self._exc = False, exc

    def __exit__(self, exc_type, exc, tb) -> None:
        store = self.store
        try:
            if exc_type is not None:
                if self._live:
                    sqlite.rollback(store._db)
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
                self.held = True
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
        return NO_CURSOR

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
