"""SQLite as our stores use it (the alert state, the dead-letter store): one place for the
pragmas, the transaction that rolls back on error, and what a full disk looks like.

Both stores live on the data disk the spool needs, so both keep the WAL small; both are
written from more than one thread under their own lock, so the connection is shared
(`check_same_thread=False`) and in autocommit mode (`isolation_level=None`: a transaction
is an explicit BEGIN IMMEDIATE, never one the driver opens behind our back).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SQLITE_IOERR, _SQLITE_FULL = 10, 13


def connect(path: Path | str, *, busy_timeout_ms: int | None = None,
            incremental_vacuum: bool = False) -> sqlite3.Connection:
    """Open `path` with WAL, synchronous=FULL (a commit is on disk when it returns) and a
    WAL bounded near 1 MiB. `busy_timeout_ms`: wait that long for another process's
    commit. `incremental_vacuum`: a new, empty file gives freed pages back on request
    (an existing file keeps its mode)."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    if busy_timeout_ms is not None:
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if incremental_vacuum:
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before WAL: it only applies to an empty file
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    # Checkpoint every 1 MiB of WAL (not SQLite's 4) and cut the file back to that size
    # afterwards: the WAL is part of the store's footprint on a disk the spool needs.
    db.execute("PRAGMA wal_autocheckpoint=256")
    db.execute("PRAGMA journal_size_limit=1048576")
    return db


def rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any. Quietly: it runs while another error is
    being handled (often a full disk), which is the one worth reporting."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`with transaction(db):` BEGIN IMMEDIATE ... COMMIT; any error (in the block or in the
    COMMIT) rolls back and is raised again."""
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        rollback(db)
        raise


def checkpoint_wal(db: sqlite3.Connection) -> None:
    """After a write failed on a full disk: fold the WAL into the database and cut it to
    nothing, which gives its space back (its pages mostly exist in the file already)."""
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        pass


def is_storage_error(exc: BaseException) -> bool:
    """A write failed for lack of space or an I/O error (worth holding and retrying), not
    a bug in the statement."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)
    text = str(exc).lower()
    return "disk is full" in text or "disk i/o error" in text
