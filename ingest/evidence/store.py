"""The kept six-100 evidence: per site and UTC day, one minute-by-minute record of the facts
the judgement needs, in SQLite beside the spool (`CW_DATA_DIR/six100.sqlite3`).

Tables:
- `dirty(seq, site, minute)`: minutes that InfluxDB accepted new points for. The writer
  marks them after InfluxDB accepted a batch and before the spool checkpoint moves; a
  crash between the two re-sends the batch and marks again (harmless). A mark seen again
  gets a new `seq` (INSERT OR REPLACE, AUTOINCREMENT never reuses one), so the refresher
  deletes only the marks it read before its InfluxDB query: a write that lands meanwhile
  keeps its mark and is read by the next refresh.
- `facts(day, site, version, data)`: the minute facts of one site and UTC day (`DayFacts`,
  sparse columns), replaced minute ranges at a time by the refresher; `version` is a
  global counter so readers can cache what they judged from it.
- `meta`: `live_since_ms` (the store's creation: every point written by our writers since
  then is marked) and the UTC days rebuilt from InfluxDB (`rebuilt:<day_ms>`).

A full disk never holds the writer back (the spool's drain is what gives the space back):
when marks cannot be written, the store gives up its coverage instead — in one small
transaction made possible by a reserve file it deletes for it — so that every day is read
from InfluxDB again (correct, slower) until `citywatch report six100 --rebuild`; marking
resumes, with `live_since_ms` at that moment, once the reserve can be made again.

Everything is idempotent: a minute's facts are re-read from InfluxDB as a whole, so a
replayed or corrected point (same series and time: InfluxDB overwrites) and a late one
for an old day end up exactly as InfluxDB holds them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from citywatch.sqlite import connect, is_storage_error, transaction

DAY_MS = 86_400_000
MIN_MS = 60_000
MINUTES = 1440
FILE_NAME = "six100.sqlite3"

# column → (dtype, empty value). Site level: PM10 is the worst device's valid 1-minute mean;
# ratios are summed over the site's devices (lo: the lowest valid sample of the minute).
COLUMNS: dict[str, tuple[str, float]] = {
    "pm10": ("<f8", np.nan),
    "cover_ratio_n": ("<i4", 0), "cover_ratio_s": ("<f8", 0.0), "cover_ratio_lo": ("<f8", np.nan),
    "hardened_ratio_n": ("<i4", 0), "hardened_ratio_s": ("<f8", 0.0), "hardened_ratio_lo": ("<f8", np.nan),
    "hoarding_n": ("<i4", 0), "hoarding_false": ("<i4", 0),
    "spray_n": ("<i4", 0), "spray_true": ("<i4", 0),
    "flag_pm10": ("<i4", 0), "flag_pm25": ("<i4", 0), "flag_tsp": ("<i4", 0),
    "flag_cover_ratio": ("<i4", 0), "flag_hardened_ratio": ("<i4", 0),
}
_LEN = struct.Struct("<I")


log = logging.getLogger("citywatch.evidence")
# The give-up transaction changes a few rows of `meta` (a page or two of WAL); on a disk
# this full every KiB kept back is one the spool's checkpoint cannot have.
RESERVE_BYTES = 32 * 1024
RESUME_FREE_BYTES = 1024 * 1024
NO_COVERAGE = 1 << 62  # `live_since_ms` after a give-up: no day is covered until marking resumes


def evidence_path(data_dir: Path | str) -> Path:
    """The store of an installation: beside the spool, shared by its ingest processes."""
    return Path(data_dir) / FILE_NAME


def _empty(name: str, n: int = MINUTES) -> np.ndarray:
    dtype, fill = COLUMNS[name]
    return np.full(n, fill, dtype=dtype)


@dataclass
class DayFacts:
    """One site's UTC day, dense: column → array of 1440 minutes; vehicle exits as
    [time ms, washed, wash_seconds, covered]."""

    cols: dict[str, np.ndarray] = field(default_factory=lambda: {c: _empty(c) for c in COLUMNS})
    exits: list[list[Any]] = field(default_factory=list)

    def replace(self, lo: int, hi: int, new: "DayFacts", day_ms: int) -> None:
        """Minutes [lo, hi) of the day (indexes) and their exits become those of `new`."""
        for c, arr in self.cols.items():
            arr[lo:hi] = new.cols[c][lo:hi]
        a, b = day_ms + lo * MIN_MS, day_ms + hi * MIN_MS
        self.exits = sorted([e for e in self.exits if not a <= e[0] < b] +
                            [e for e in new.exits if a <= e[0] < b], key=lambda e: e[0])

    def encode(self) -> bytes:
        """Per column only the minutes that hold something (their indexes, then the values;
        a column that is mostly full is stored whole), the lot zlib-compressed (level 1:
        a full day of constant ratios shrinks to almost nothing, PM10 values do not)."""
        header: dict[str, Any] = {"exits": self.exits, "cols": {}}
        parts: list[bytes] = []
        for c, arr in self.cols.items():
            present = ~np.isnan(arr) if arr.dtype.kind == "f" and np.isnan(COLUMNS[c][1]) else arr != 0
            idx = np.flatnonzero(present).astype("<u2")
            if idx.size * 3 > MINUTES:
                header["cols"][c] = -1  # dense
                parts.append(arr.astype(COLUMNS[c][0]).tobytes())
            elif idx.size:
                header["cols"][c] = int(idx.size)
                parts += [idx.tobytes(), arr[idx].astype(COLUMNS[c][0]).tobytes()]
        head = json.dumps(header, separators=(",", ":")).encode()
        return zlib.compress(_LEN.pack(len(head)) + head + b"".join(parts), 1)

    @classmethod
    def decode(cls, blob: bytes) -> "DayFacts":
        blob = zlib.decompress(blob)
        (n,) = _LEN.unpack_from(blob)
        header = json.loads(blob[4:4 + n])
        out = cls(exits=header["exits"])
        pos = 4 + n
        for c, k in header["cols"].items():
            dtype = np.dtype(COLUMNS[c][0])
            if k < 0:
                out.cols[c] = np.frombuffer(blob, dtype, MINUTES, pos).copy()
                pos += dtype.itemsize * MINUTES
                continue
            idx = np.frombuffer(blob, "<u2", k, pos)
            pos += 2 * k
            out.cols[c][idx] = np.frombuffer(blob, dtype, k, pos)
            pos += dtype.itemsize * k
        return out


# The site tag and the time of a `dust` reading or an `events` line, as citywatch/lineproto.py
# writes them (tags sorted: device, [kind,] site; identifiers need no escaping). The time is
# read in 10-s units (its last 4 digits dropped) so that a batch's lines fold into a few
# distinct byte pairs before any int() is made: ~1.5 µs a line on the writer's thread.
_LINE = re.compile(rb"^(?:dust,device=[^ ,]*|events,device=[^ ,]*,kind=[^ ,]*),site=([^ ,]+)[^ ]* [^\n]* (\d+)\d{4}$",
                   re.M)


def marks_of(body: bytes) -> set[tuple[str, int]]:
    """(site, minute start ms) of every dust reading and event in a line-protocol body."""
    return {(s.decode(), int(t) * 10_000 // MIN_MS * MIN_MS) for s, t in set(_LINE.findall(body))}


class EvidenceError(OSError):
    """The store cannot be written (disk full, I/O error)."""


class EvidenceStore:
    """Thread-safe (one connection, a lock); several processes may open the same file
    (SQLite WAL: the MQTT ingest workers mark, the main process refreshes and reads)."""

    def __init__(self, path: Path, *, low_water_bytes: int = 0) -> None:
        self.path = Path(path)
        # Below this much free space the spool has the disk to itself: marks give coverage up
        # rather than take pages the drain needs (CW_SPOOL_WARN_FREE_*, ingest/disk.py).
        self.low_water_bytes = low_water_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # synchronous=FULL: a mark must be on disk before the spool checkpoint moves past its
        # batch; a small WAL: the data disk may be small, and its space is the spool's first.
        # Several processes write (the MQTT ingest workers mark): wait for each other's commits.
        self._db = connect(self.path, busy_timeout_ms=30_000)
        self._db.executescript("""
                CREATE TABLE IF NOT EXISTS dirty (seq INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL,
                    minute INTEGER NOT NULL, UNIQUE (site, minute));
                CREATE TABLE IF NOT EXISTS facts (day INTEGER NOT NULL, site TEXT NOT NULL, version INTEGER NOT NULL,
                    data BLOB NOT NULL, PRIMARY KEY (day, site)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """)
        with transaction(self._db):
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('live_since_ms', ?)", (str(int(time.time() * 1000)),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('version', '0')")
        self._reserve = self.path.with_name(self.path.name + ".reserve")
        # Marks were given up (disk full) in this process: none until the reserve is back.
        self._gap = not self._make_reserve() or self.live_since_ms() >= NO_COVERAGE

    def _make_reserve(self) -> bool:
        """The space the give-up transaction needs when the disk is full (see module doc)."""
        if self._reserve.exists():
            return True
        try:
            with open(self._reserve, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, RESERVE_BYTES)
            return True
        except OSError:
            self._reserve.unlink(missing_ok=True)
            return False

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- the writer's side -------------------------------------------------------------
    def mark(self, pairs: Iterable[tuple[str, int]]) -> None:
        rows = list(pairs)
        if not rows:
            return
        if self._gap and not self._resume():
            return  # coverage is given up: nothing to keep until space returns
        if self.low_water_bytes and self._free_bytes() < self.low_water_bytes:
            self._give_up(f"{self._free_bytes() // 1024} KiB free, below {self.low_water_bytes // 1024} KiB")
            return
        try:
            with self._lock, transaction(self._db):
                self._db.executemany("INSERT OR REPLACE INTO dirty (site, minute) VALUES (?, ?)", rows)
        except sqlite3.Error as exc:
            if not is_storage_error(exc):
                raise EvidenceError(f"six-100 evidence marks: {exc}") from exc
            self._give_up(exc)

    def _free_bytes(self) -> int:
        st = os.statvfs(self.path.parent)
        return st.f_bavail * st.f_frsize

    def low_on_space(self) -> bool:
        """The refresher and the judged cache write nothing while this holds."""
        return bool(self.low_water_bytes) and self._free_bytes() < self.low_water_bytes

    def _give_up(self, cause: object) -> None:
        """No room for marks: stop claiming coverage (every day read from InfluxDB again),
        in the room the reserve leaves. Raises EvidenceError (the writer retries) only when
        even that cannot be written."""
        self._reserve.unlink(missing_ok=True)
        try:
            with self._lock, transaction(self._db):
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'live_since_ms'", (str(NO_COVERAGE),))
                self._db.execute("DELETE FROM meta WHERE key LIKE 'rebuilt:%'")
                # the marks stay: deleting them would write a page per few hundred, and the
                # refresher applying them later is harmless (no day is covered now)
        except sqlite3.Error as exc:
            raise EvidenceError(f"six-100 evidence: cannot give up coverage on a full disk: {exc}") from exc
        self._gap = True
        log.warning("six-100 evidence: no room for marks (%s); the compliance report reads InfluxDB until "
                    "`citywatch report six100 --rebuild` (marking resumes when space returns)", cause)

    def _resume(self) -> bool:
        """After a give-up: mark again from now on, once the reserve can be made again with
        room to spare (not at the first freed page: that would give up again at once)."""
        if self._free_bytes() < max(RESUME_FREE_BYTES, self.low_water_bytes + RESUME_FREE_BYTES) \
                or not self._make_reserve():
            return False
        try:
            with self._lock, transaction(self._db):
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'live_since_ms'",
                                 (str(int(time.time() * 1000)),))
        except sqlite3.Error as exc:
            if not is_storage_error(exc):
                raise EvidenceError(f"six-100 evidence: {exc}") from exc
            self._reserve.unlink(missing_ok=True)
            return False
        self._gap = False
        log.info("six-100 evidence: marking again; days before now are read from InfluxDB until rebuilt")
        return True

    def mark_body(self, body: bytes) -> None:
        """The writer's hook: mark what a batch InfluxDB accepted touched."""
        self.mark(marks_of(body))

    # --- the refresher's side ----------------------------------------------------------
    def pending(self, limit: int = 200_000) -> tuple[int, dict[str, list[int]]]:
        """(highest seq read, site → marked minutes)."""
        with self._lock:
            rows = self._db.execute("SELECT seq, site, minute FROM dirty ORDER BY seq LIMIT ?", (limit,)).fetchall()
        out: dict[str, list[int]] = {}
        for _, site, minute in rows:
            out.setdefault(site, []).append(minute)
        return (rows[-1][0] if rows else 0), out

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM dirty").fetchone()[0])

    def version(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0])

    def apply(self, updates: Mapping[tuple[str, int], list[tuple[int, int, DayFacts]]], *, done_seq: int = 0,
              rebuilt_days: Iterable[int] = (), read_at_version: int | None = None) -> int:
        """Replace minute ranges: (site, UTC day ms) → [(first index, end index, facts)];
        then drop the marks up to `done_seq` and record rebuilt days, in one transaction.
        `read_at_version`: the store's version when the facts were read (a rebuild, which
        may run beside the service's keeper); a row another process changed since then may
        hold newer minutes than ours, so its ranges are marked to be read again."""
        with self._lock, transaction(self._db):
            version = int(self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]) + 1
            for (site, day), parts in updates.items():
                row = self._db.execute("SELECT data, version FROM facts WHERE day = ? AND site = ?",
                                       (day, site)).fetchone()
                facts = DayFacts.decode(row[0]) if row else DayFacts()
                for lo, hi, new in parts:
                    facts.replace(lo, hi, new, day)
                    if row and read_at_version is not None and row[1] > read_at_version:
                        self._db.executemany("INSERT OR REPLACE INTO dirty (site, minute) VALUES (?, ?)",
                                             [(site, day + i * MIN_MS) for i in range(lo, hi)])
                self._db.execute("INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?)", (day, site, version, facts.encode()))
            if done_seq:
                self._db.execute("DELETE FROM dirty WHERE seq <= ?", (done_seq,))
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, '1')",
                                 [(f"rebuilt:{int(d)}",) for d in rebuilt_days])
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(version),))
        return version

    def put_days(self, rows: Iterable[tuple[int, str, bytes]], rebuilt_days: Iterable[int] = ()) -> None:
        """Whole days at once (`citywatch bench --query` generates a year of them)."""
        with self._lock, transaction(self._db):
            version = int(self._db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]) + 1
            self._db.executemany("INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?)",
                                 ((d, s, version, blob) for d, s, blob in rows))
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, '1')",
                                 [(f"rebuilt:{int(d)}",) for d in rebuilt_days])
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'version'", (str(version),))

    # --- readers -----------------------------------------------------------------------
    def live_since_ms(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'live_since_ms'").fetchone()[0])

    def rebuilt(self, days: Iterable[int]) -> set[int]:
        keys = [f"rebuilt:{int(d)}" for d in days]
        with self._lock:
            rows = self._db.execute(f"SELECT key FROM meta WHERE key IN ({','.join('?' * len(keys))})",
                                    keys).fetchall() if keys else []
        return {int(k.split(":")[1]) for (k,) in rows}

    def versions(self, days: list[int], sites: list[str] | None = None) -> dict[tuple[str, int], int]:
        """(site, day) → version for the days (all sites, or these)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT site, day, version FROM facts WHERE day >= ? AND day <= ?", (min(days), max(days))).fetchall()
        wanted = None if sites is None else set(sites)
        return {(s, d): v for s, d, v in rows if d in days and (wanted is None or s in wanted)}

    def day_versions(self, first: int, last: int) -> dict[int, int]:
        """UTC day → the highest version of its records, for the days first..last: what
        changed since a reader last looked (api/warm.py) without reading every row's key."""
        with self._lock:
            rows = self._db.execute("SELECT day, max(version) FROM facts WHERE day >= ? AND day <= ? GROUP BY day",
                                    (first, last)).fetchall()
        return {int(d): int(v) for d, v in rows}

    def read(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, bytes]]:
        """(site, day) → (version, blob) for those that exist."""
        out: dict[tuple[str, int], tuple[int, bytes]] = {}
        with self._lock:
            for site, day in keys:
                row = self._db.execute("SELECT version, data FROM facts WHERE day = ? AND site = ?",
                                       (day, site)).fetchone()
                if row:
                    out[(site, day)] = (row[0], row[1])
        return out

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
