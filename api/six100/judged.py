"""Judged six-100 site-days kept on disk (`six100-judged.sqlite3` beside the evidence store),
so a restart or a month view reads what was judged before instead of judging it again
(~2–4 ms a site-day; a month of 1,000 sites is 31,000 of them).

A row is (local day, site) → the key it was judged under and the SiteCompliance as JSON
(empty: the site is not part of that day's report). The key is a digest of everything
that decides the answer: the versions of the site's kept UTC-day records (a late,
replayed or corrected reading changes them), the end of the judged span, the rules and
the site's registry inputs. A row under another key is never served, only replaced.

Only whole days are written: today's answer changes every minute and stays in memory.
The file is a cache: synchronous=NORMAL (a crash may lose the last rows, which are judged
again), and deleting it is harmless.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from citywatch.sqlite import connect, transaction

FILE_NAME = "six100-judged.sqlite3"
log = logging.getLogger("citywatch.api.six100")


def digest(key: tuple) -> str:
    return hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()


class JudgedStore:
    """Thread-safe (one connection, a lock)."""

    def __init__(self, path: Path, *, low_on_space: Callable[[], bool] = lambda: False) -> None:
        self.path = Path(path)
        self._low_on_space = low_on_space  # the evidence store's: below it the spool has the disk first
        self._lock = threading.Lock()
        self._db = connect(self.path, busy_timeout_ms=30_000)
        self._db.execute("PRAGMA synchronous=NORMAL")  # a cache: a lost row is judged again
        self._db.execute("CREATE TABLE IF NOT EXISTS judged (day TEXT NOT NULL, site TEXT NOT NULL, "
                         "key TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (day, site)) WITHOUT ROWID")

    def get(self, day: str, sites: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        """site → (key, data) of the rows held for this day; none when the file cannot be read."""
        wanted = set(sites)
        try:
            with self._lock:
                rows = self._db.execute("SELECT site, key, data FROM judged WHERE day = ?", (day,)).fetchall()
        except sqlite3.Error as exc:  # a cache: the days are judged instead
            log.warning("six-100 judged days not read: %s", exc)
            return {}
        return {s: (k, bytes(d)) for s, k, d in rows if s in wanted}

    def put(self, rows: Iterable[tuple[str, str, str, bytes]]) -> None:
        """(day, site, key, data) rows, replacing what was there. A full disk skips them:
        the spool needs the space more, and they are judged again after a restart."""
        rows = list(rows)
        if not rows or self._low_on_space():
            return
        try:
            with self._lock, transaction(self._db):
                self._db.executemany("INSERT OR REPLACE INTO judged VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            log.warning("six-100 judged days not kept on disk: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._db.close()
