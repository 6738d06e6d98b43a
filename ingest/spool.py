"""The durable local spool: append-only segment files of line-protocol records.

Layout under `dir`: `NNNNNNNNNNNN.seg` segment files and a `checkpoint` file. A record is
`<u32 length><u32 crc32>` + payload, where the payload is newline-terminated line-protocol
lines. `append()` writes records and fsyncs once per call (the group commit); a torn tail
left by a crash is found by the CRC at the next open and cut off — those messages were
never acknowledged, so the broker delivers them again.

The writer reads from the checkpoint (`read_batch`), and `commit(position)` moves the
checkpoint after InfluxDB accepted the batch (write-temp, fsync, rename). Segments wholly
before the checkpoint are deleted. Delivery to InfluxDB is therefore at-least-once, and
exact because a re-written point (same series and timestamp) overwrites itself.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from citywatch.errors import SpoolError

_HEADER = struct.Struct("<II")


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

    def __init__(self, directory: Path, *, segment_bytes: int = 64 * 1024 * 1024) -> None:
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
        self._lock = threading.Lock()
        self._checkpoint = self._read_checkpoint()
        segments = self._segments()
        if not segments:
            segments = [max(1, self._checkpoint.segment)]
        self._current = segments[-1]
        self._size = self._recover(self._current)
        self._fd = os.open(self._path(self._current), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._fsync_dir()
        # Lines not yet confirmed by the writer; rebuilt by counting at startup.
        self._backlog_lines = self._count_lines(self._checkpoint)
        self._backlog_bytes = self._bytes_after(self._checkpoint)

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

    def _recover(self, segment: int) -> int:
        """Return the valid length of `segment`, truncating a torn tail."""
        path = self._path(segment)
        if not path.exists():
            return 0
        valid = 0
        with open(path, "rb") as f:
            data = f.read()
        while valid + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, valid)
            end = valid + _HEADER.size + length
            if length > MAX_RECORD or end > len(data):
                break
            if zlib.crc32(memoryview(data)[valid + _HEADER.size:end]) != crc:
                break
            valid = end
        if valid != len(data):
            with open(path, "r+b") as f:
                f.truncate(valid)
                os.fsync(f.fileno())
        return valid

    def _iter_records(self, start: Position, max_bytes: int | None = None):
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

    def _roll(self) -> None:
        os.close(self._fd)
        self._current += 1
        self._size = 0
        self._fd = os.open(self._path(self._current), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._fsync_dir()

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
        """The writer stored `batch`: move the checkpoint past it, drop finished segments."""
        if batch.start != self._checkpoint:
            raise SpoolError(f"commit out of order: batch starts at {batch.start}, checkpoint is {self._checkpoint}")
        tmp = self.dir / "checkpoint.tmp"
        with open(tmp, "w") as f:
            json.dump({"segment": batch.end.segment, "offset": batch.end.offset}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "checkpoint")
        self._checkpoint = batch.end
        with self._lock:
            self._backlog_lines -= batch.count
            self._backlog_bytes = max(0, self._backlog_bytes - _span(batch, self))
            current = self._current
        for segment in self._segments():
            if segment < batch.end.segment and segment < current:
                self._path(segment).unlink(missing_ok=True)

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
