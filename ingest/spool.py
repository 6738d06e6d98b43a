"""The durable local spool: append-only segment files of line-protocol records.

Layout under `dir`: `NNNNNNNNNNNN.seg` segment files and a `checkpoint` file. A record is
`<u32 length><u32 crc32>` + payload, where the payload is newline-terminated line-protocol
lines. `append()` writes records and fsyncs once per call (the group commit); a torn tail
left by a crash is found by the CRC at the next open and cut off — those messages were
never acknowledged, so the broker delivers them again.

The writer reads from the checkpoint (`read_batch`), and `commit(position)` moves the
checkpoint after InfluxDB accepted the batch (write-temp, fsync, rename). Delivery to
InfluxDB is therefore at-least-once, and exact because a re-written point (same series
and timestamp) overwrites itself.

Disk space follows the checkpoint (`reclaim`, run after every commit): segments wholly
before it are deleted; the active segment is rolled over as soon as the writer has
caught up with it (so it can be deleted too, whatever its size); and the consumed prefix
of the segment being read is given back with `fallocate(PUNCH_HOLE)` in steps of
`reclaim_step` bytes (the file keeps its length, the blocks are freed; filesystems without
hole punching still get the first two). Space is only ever given back behind a checkpoint
that is on disk. After an outage, free space therefore returns to what it was before, and
the disk watch never waits for a 64 MB segment to fill up first.

A small `reserve` file (64 KiB) is kept beside the segments: when the disk is so full that
even the checkpoint cannot be written (a few bytes, but a new file), it is given up so the
writer can move on and free the segments behind it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import json
import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from citywatch.errors import SpoolError

_HEADER = struct.Struct("<II")
log = logging.getLogger("citywatch.ingest.spool")
_RESERVE_BYTES = 64 * 1024
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # not Linux / not glibc: segments are still deleted and rolled
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn.restype = ctypes.c_int
    return fn


_fallocate = _load_fallocate()


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free the blocks of [offset, offset + length) keeping the file's size; False when the
    filesystem cannot (the caller then relies on deleting whole segments)."""
    if _fallocate is None or length <= 0:
        return False
    if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, f"fallocate(PUNCH_HOLE) failed: {os.strerror(err)}")


class SpoolLocked(SpoolError):
    """The spool directory is in use by another process."""

MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, order=True)
class Position:
    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class SpoolBatch:
    body: bytes  # newline-terminated line protocol, as it goes to InfluxDB
    count: int  # lines in body
    start: Position
    end: Position  # commit(end) acknowledges every line of this batch

    @property
    def lines(self) -> list[bytes]:
        """Each line without its newline (split only when a batch must be bisected)."""
        return self.body.rstrip(b"\n").split(b"\n") if self.body else []


class Spool:
    """Thread-safe: one appender thread and one reader may work at once."""

    def __init__(self, directory: Path, *, segment_bytes: int = 64 * 1024 * 1024,
                 reclaim_step: int | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        # One appender per spool: a second `citywatch run` (or a replay) on the same data
        # dir would interleave records and fight over the checkpoint.
        self._lock_file = open(self.dir / "lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock_file.close()
            raise SpoolLocked(f"another citywatch process is using the spool in {self.dir}") from exc
        self._segment_bytes = segment_bytes
        # Space is given back in steps of this many bytes (a multiple of 4 KiB): at most a
        # step of consumed data waits for the next one.
        step = reclaim_step if reclaim_step is not None else min(1024 * 1024, segment_bytes // 16)
        self._step = max(4096, step // 4096 * 4096)
        self._lock = threading.Lock()
        self._reclaim_lock = threading.Lock()
        self._dir_dirty = False
        self._checkpoint = self._read_checkpoint()
        cp = self._checkpoint
        segments = self._segments()
        self._current = segments[-1] if segments else max(1, cp.segment)
        self._size = self._recover(self._current, cp.offset if self._current == cp.segment else 0)
        if self._current < cp.segment or (self._current == cp.segment and self._size < cp.offset):
            # The checkpoint's segment was rolled and deleted (or never had more data): a
            # fresh segment after it, never one the checkpoint would seek into.
            self._current, self._size = cp.segment + 1, 0
        self._fd = os.open(self._path(self._current), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._fsync_dir()
        self._punch_ok = True
        self._reclaimed = Position(0, 0)  # space before this was given back already
        self.reclaimed_bytes = 0  # given back since start (for metrics and tests)
        # Lines not yet confirmed by the writer; rebuilt by counting at startup.
        self._backlog_lines = self._count_lines(self._checkpoint)
        self._backlog_bytes = self._bytes_after(self._checkpoint)
        self.reclaim()
        self._ensure_reserve()

    # -- files ---------------------------------------------------------------------
    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:012d}.seg"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.seg") if p.stem.isdigit())

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_checkpoint(self) -> Position:
        try:
            doc = json.loads((self.dir / "checkpoint").read_text())
            return Position(int(doc["segment"]), int(doc["offset"]))
        except FileNotFoundError:
            return Position(1, 0)
        except (ValueError, KeyError) as exc:
            raise SpoolError(f"spool checkpoint {self.dir / 'checkpoint'} is unreadable: {exc}") from exc

    def _recover(self, segment: int, start: int = 0) -> int:
        """Return the valid length of `segment`, truncating a torn tail. Records are checked
        from `start` on (the checkpoint: what lies before it was consumed, and may be a
        hole already given back); read in pieces, never the whole segment at once."""
        path = self._path(segment)
        if not path.exists():
            return 0
        valid = start
        with open(path, "rb") as f:
            end_of_file = os.fstat(f.fileno()).st_size
            if start > end_of_file:
                return end_of_file
            f.seek(start)
            while True:
                header = f.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                length, crc = _HEADER.unpack(header)
                if length == 0 or length > MAX_RECORD or valid + _HEADER.size + length > end_of_file:
                    break
                if zlib.crc32(f.read(length)) != crc:
                    break
                valid += _HEADER.size + length
        if valid != end_of_file:
            with open(path, "r+b") as f:
                f.truncate(valid)
                os.fsync(f.fileno())
        return valid

    def _iter_records(self, start: Position, max_bytes: int | None = None) -> Iterator[tuple[Position, bytes]]:
        """Yield (position_after, payload) for records at or after `start`."""
        for segment in self._segments():
            if segment < start.segment:
                continue
            offset = start.offset if segment == start.segment else 0
            with open(self._path(segment), "rb") as f:
                f.seek(offset)
                while True:
                    header = f.read(_HEADER.size)
                    if len(header) < _HEADER.size:
                        break
                    length, crc = _HEADER.unpack(header)
                    if length == 0:  # never written by append: zeros of a hole or preallocation
                        break
                    payload = f.read(length)
                    if len(payload) < length or zlib.crc32(payload) != crc:
                        break  # a record being appended right now, or a torn tail
                    offset += _HEADER.size + length
                    yield Position(segment, offset), payload

    def _count_lines(self, start: Position) -> int:
        return sum(p.count(b"\n") for _, p in self._iter_records(start))

    def _bytes_after(self, start: Position) -> int:
        total = 0
        for segment in self._segments():
            if segment < start.segment:
                continue
            size = self._path(segment).stat().st_size
            total += size - (start.offset if segment == start.segment else 0)
        return total

    # -- appending -----------------------------------------------------------------
    def append(self, lines: list[str]) -> Position:
        """Write `lines` durably (one fsync) and return the end position."""
        if not lines:
            return Position(self._current, self._size)
        # Encoded line by line and joined as bytes: joining the str first would widen the
        # whole group to 2 or 4 bytes a character as soon as one line is not ASCII (an
        # event's licence plate), which costs more than encoding each line.
        body = b"\n".join(map(str.encode, lines))
        if len(body) < 4 * 1024 * 1024:
            # One record, written straight from its parts: the CRC covers body and newline.
            length = len(body) + 1
            parts = [_HEADER.pack(length, zlib.crc32(b"\n", zlib.crc32(body))), body, b"\n"]
        else:
            # Keep records small enough for one write batch to hold several.
            parts = []
            for chunk in _split(body + b"\n", 4 * 1024 * 1024):
                parts += (_HEADER.pack(len(chunk), zlib.crc32(chunk)), chunk)
        size = sum(map(len, parts))
        with self._lock:
            try:
                written = os.writev(self._fd, parts)
                if written != size:  # a regular file writes short only when the disk is full
                    raise OSError(errno.ENOSPC, f"short write: {written} of {size} bytes")
                os.fsync(self._fd)
                if self._dir_dirty:  # the segment's directory entry is not on disk yet
                    self._fsync_dir()
                    self._dir_dirty = False
            except OSError as exc:
                # A partial write leaves a torn record; cut it so later appends stay readable.
                try:
                    os.ftruncate(self._fd, self._size)
                except OSError:
                    pass
                raise SpoolError(f"spool append failed: {exc}") from exc
            self._size += size
            self._backlog_lines += len(lines)
            self._backlog_bytes += size
            end = Position(self._current, self._size)
            if self._size >= self._segment_bytes:
                self._roll()
        return end

    def _roll(self) -> bool:
        """Start the next segment (caller holds the lock). On failure (no inode, no room
        for the directory entry) keep writing to this one and say so: False."""
        try:
            fd = os.open(self._path(self._current + 1), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError as exc:
            log.warning("could not start spool segment %d (%s); appending to segment %d meanwhile",
                        self._current + 1, exc, self._current)
            return False
        os.close(self._fd)
        self._fd = fd
        self._current += 1
        self._size = 0
        try:
            self._fsync_dir()
        except OSError as exc:  # the next append syncs the directory before it counts as durable
            log.warning("fsync of %s failed: %s", self.dir, exc)
            self._dir_dirty = True
        return True

    # -- reading -------------------------------------------------------------------
    def read_batch(self, max_lines: int, max_bytes: int = 8 * 1024 * 1024) -> SpoolBatch | None:
        """Up to about `max_lines` lines after the checkpoint (whole records), or None."""
        start = self._checkpoint
        parts: list[bytes] = []
        count = size = 0
        end = start
        for pos, payload in self._iter_records(start):
            n = payload.count(b"\n")
            if parts and (count + n > max_lines or size + len(payload) > max_bytes):
                break
            parts.append(payload)
            count += n
            size += len(payload)
            end = pos
        if not parts:
            return None
        return SpoolBatch(b"".join(parts), count, start, end)

    def commit(self, batch: SpoolBatch) -> None:
        """The writer stored `batch`: move the checkpoint past it, give back the space."""
        if batch.start != self._checkpoint:
            raise SpoolError(f"commit out of order: batch starts at {batch.start}, checkpoint is {self._checkpoint}")
        span = _span(batch, self)  # before any segment of it is deleted
        try:
            self._write_checkpoint(batch.end)
        except OSError as exc:
            if exc.errno not in _FULL:
                raise SpoolError(f"cannot write the spool checkpoint: {exc}") from exc
            # The disk is full. Whole segments that InfluxDB now holds can go before the
            # checkpoint says so (a restart skips a missing segment), and the reserve makes
            # room for the checkpoint itself.
            self._delete_consumed(batch.end)
            self._drop_reserve()
            try:
                self._write_checkpoint(batch.end)
            except OSError as exc2:
                raise SpoolError(f"cannot write the spool checkpoint (disk full): {exc2}") from exc2
        self._checkpoint = batch.end
        with self._lock:
            self._backlog_lines -= batch.count
            self._backlog_bytes = max(0, self._backlog_bytes - span)
        self.reclaim()

    def _write_checkpoint(self, pos: Position) -> None:
        tmp = self.dir / "checkpoint.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump({"segment": pos.segment, "offset": pos.offset}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / "checkpoint")
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

    # -- giving space back -----------------------------------------------------------
    def reclaim(self) -> int:
        """Give back the disk space of everything before the (durable) checkpoint: roll
        the active segment once the writer has caught up with it, delete finished
        segments, punch the consumed prefix of the one being read. Returns bytes freed."""
        with self._reclaim_lock:
            cp = self._checkpoint
            with self._lock:
                # Caught up: new appends go to a fresh segment, so this one can go now
                # instead of when it is full (which, with intake paused, may be never).
                if cp.segment == self._current and cp.offset == self._size and self._size >= self._step \
                        and self._fd >= 0:
                    self._roll()
            freed = self._delete_consumed(cp) + self._punch_consumed(cp)
            self.reclaimed_bytes += freed
            if freed:
                self._ensure_reserve()
            return freed

    def _punch_consumed(self, cp: Position) -> int:
        if not self._punch_ok:
            return 0
        if cp.segment != self._reclaimed.segment:
            self._reclaimed = Position(cp.segment, 0)
        start, end = self._reclaimed.offset, cp.offset // 4096 * 4096
        if end - start < self._step:
            return 0
        try:
            fd = os.open(self._path(cp.segment), os.O_WRONLY)
        except FileNotFoundError:
            return 0
        try:
            if not punch_hole(fd, start, end - start):
                self._punch_ok = False
                log.info("the filesystem of %s cannot punch holes; consumed spool space is given back "
                         "segment by segment", self.dir)
                return 0
        except OSError as exc:
            log.warning("could not give back consumed spool space: %s", exc)
            return 0
        finally:
            os.close(fd)
        self._reclaimed = Position(cp.segment, end)
        return end - start

    def _delete_consumed(self, upto: Position) -> int:
        """Delete segments that hold nothing at or after `upto` (never the active one)."""
        freed = 0
        with self._lock:
            current = self._current
        for segment in self._segments():
            if segment >= current or segment > upto.segment:
                break
            path = self._path(segment)
            try:
                size = path.stat().st_size
                if segment == upto.segment and upto.offset < size:
                    break
                blocks = path.stat().st_blocks * 512
                path.unlink()
            except FileNotFoundError:
                continue
            freed += min(size, blocks)
        return freed

    @property
    def reclaimable_bytes(self) -> int:
        """Consumed bytes still on disk: what `reclaim` gives back (at most about a step
        once it has run). The disk watch counts them as free."""
        cp = self._checkpoint
        if not self._punch_ok:
            return 0
        done = self._reclaimed.offset if self._reclaimed.segment == cp.segment else 0
        return max(0, cp.offset - done)

    def _ensure_reserve(self) -> None:
        path = self.dir / "reserve"
        try:
            if path.exists() and path.stat().st_size >= _RESERVE_BYTES:
                return
            with open(path, "wb") as f:
                f.write(b"\0" * _RESERVE_BYTES)
                os.fsync(f.fileno())
        except OSError:
            path.unlink(missing_ok=True)  # no room yet; the next reclaim tries again

    def _drop_reserve(self) -> None:
        path = self.dir / "reserve"
        if path.exists():
            log.warning("disk full under %s: released the spool's %d KiB reserve to write the checkpoint",
                        self.dir, _RESERVE_BYTES // 1024)
            path.unlink(missing_ok=True)

    # -- state ---------------------------------------------------------------------
    @property
    def backlog_lines(self) -> int:
        return self._backlog_lines

    @property
    def backlog_bytes(self) -> int:
        return self._backlog_bytes

    @property
    def checkpoint(self) -> Position:
        return self._checkpoint

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self._lock_file.close()


def _split(payload: bytes, limit: int) -> list[bytes]:
    """Split newline-terminated `payload` into chunks of whole lines near `limit` bytes."""
    out, start = [], 0
    while start < len(payload):
        end = payload.rfind(b"\n", start, start + limit)
        end = payload.find(b"\n", start + limit) if end < start else end
        end = len(payload) - 1 if end < 0 else end
        out.append(payload[start:end + 1])
        start = end + 1
    return out


def _span(batch: SpoolBatch, spool: Spool) -> int:
    if batch.start.segment == batch.end.segment:
        return batch.end.offset - batch.start.offset
    total = 0
    for segment in range(batch.start.segment, batch.end.segment + 1):
        if segment == batch.end.segment:
            total += batch.end.offset
        else:
            try:
                size = spool._path(segment).stat().st_size
            except FileNotFoundError:
                size = 0
            total += size - (batch.start.offset if segment == batch.start.segment else 0)
    return total
