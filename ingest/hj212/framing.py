"""Incremental HJ 212 framing: `##` + 4-digit length + data + 4 hex CRC + CRLF.

`FrameDecoder.feed(chunk)` returns complete frames and framing errors in arrival order.
Every byte fed ends up in exactly one returned item (a `Frame` or the `raw` of a
`FramingError`, truncated to `max_raw` for garbage), so nothing is silently dropped.

Resynchronisation: after any error the decoder discards bytes up to the next `##`. A data
segment never contains CR LF or `##` in practice, so either inside the declared length
means the length lied or the frame was cut short; trusting the terminator rather than the
length keeps the following frame intact.

Field dialects (README "Dialects"): some vendors count the CRC and CR LF in the declared
length, some count them not at all or miscount, some send no CR LF (frames back to back,
delimited only by length and CRC). When the declared length does not lead to `CRC CR LF`,
the decoder looks for the frame's end at the next CR LF, the next `##` or the end of what
has arrived, and accepts the frame if its data ends with `&&` and its CRC (HJ 212 or
MODBUS) proves it; otherwise the error stands. A CR/LF that follows a frame which ended
without one is consumed silently (`eaten`).

Memory: the buffer never holds more than one frame (`max_data` + 12 bytes) plus one
chunk; discarded garbage is kept only up to `max_raw` bytes per error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import Final, Literal

from ingest.hj212.crc import CrcMode, crc_hex, hj212_crc, modbus_crc

HEADER = b"##"
TERMINATOR = b"\r\n"
MAX_DATA_FIELD = 9999  # what four decimal digits can declare
DEFAULT_MAX_DATA = 4096
_OVERHEAD = 2 + 4 + 4 + 2  # ## + length + CRC + CRLF
_HEX = frozenset(b"0123456789ABCDEFabcdef")


class _Resync(Enum):
    """`_take_frame`'s third answer: the header was bad, discarding has started (an enum, not
    a bare object(), so that the type checker can tell it from a frame)."""

    RESYNC = auto()


_RESYNC: Final = _Resync.RESYNC


@dataclass(frozen=True, slots=True)
class Frame:
    """A well-formed frame; the CRC is *not* checked here (its mode depends on the device)."""

    data: bytes  # the data segment, which the CRC covers
    crc: str  # the four hex digits as received
    raw: bytes  # the whole frame including ## and CRLF


@dataclass(frozen=True, slots=True)
class FramingError:
    """Bytes that are not a frame, and why; `raw` goes to the dead letters."""

    reason: str  # "<code>: <explanation>"
    raw: bytes
    discarded: int  # bytes consumed by this error (raw may be shorter)


class FrameDecoder:
    """Feed bytes, get `Frame`s and `FramingError`s. One decoder per connection."""

    def __init__(self, *, max_data: int = DEFAULT_MAX_DATA, max_raw: int | None = None) -> None:
        if not 1 <= max_data <= MAX_DATA_FIELD:
            raise ValueError(f"max_data must be within 1..{MAX_DATA_FIELD}")
        self._max_data = max_data
        self._max_raw = max_raw if max_raw is not None else max_data + _OVERHEAD
        self._buf = bytearray()
        # While discarding: why, the first max_raw bytes, and how many were dropped.
        self._skip_reason: str | None = None
        self._skip_raw = bytearray()
        self._skip_count = 0
        self._after_bare = False  # the last frame ended without CR LF: a late one is eaten
        self.eaten = 0  # CR/LF bytes consumed after frames that ended without them

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete frame or an unfinished error (0 = between frames)."""
        return len(self._buf) + self._skip_count

    @property
    def discarding(self) -> int:
        """Bytes dropped so far by the error in progress (garbage not yet followed by `##`)."""
        return self._skip_count

    def feed(self, chunk: bytes) -> list[Frame | FramingError]:
        self._buf += chunk
        out: list[Frame | FramingError] = []
        while self._buf:
            if self._after_bare:
                self._eat_terminator()
                if not self._buf or (self._after_bare and self._buf == b"\r"):
                    break
            if self._skip_reason is not None or not self._buf.startswith(HEADER[: len(self._buf)]):
                if not self._discard_to_header(out):
                    break
                continue
            item = self._take_frame()
            if item is None:
                break
            if item is not _RESYNC:
                out.append(item)
        return out

    @property
    def settleable(self) -> bool:
        """What is buffered ends like a frame (`&&` + 4 hex): if no more bytes come soon, it
        may be a whole frame sent without CR LF, and `settle()` should be called."""
        buf = self._buf
        return self._skip_reason is None and len(buf) >= 12 and buf[-6:-4] == b"&&" and buf.startswith(HEADER)

    def settle(self) -> list[Frame]:
        """The input paused: a buffered frame without CR LF whose CRC proves it, if any
        (the monitor is waiting for its answer; nothing else will end that frame)."""
        if not self.settleable:
            return []
        frame = self._proven(len(self._buf))
        return [frame] if frame is not None else []

    def flush(self, reason: str = "truncated: connection closed in the middle of a frame") -> list[FramingError]:
        """End of input (EOF, timeout): whatever is buffered becomes one error."""
        out: list[FramingError] = []
        if self._skip_reason is not None:
            self._skip_append(bytes(self._buf))
            self._buf.clear()
            out.append(self._end_skip())
        elif self._buf:
            out.append(FramingError(reason, bytes(self._buf[: self._max_raw]), len(self._buf)))
            self._buf.clear()
        return out

    # -- internals -----------------------------------------------------------------------

    def _eat_terminator(self) -> None:
        """After a frame without CR LF: drop a CR LF, CR or LF that arrives late."""
        buf = self._buf
        if buf[:2] == TERMINATOR:
            n = 2
        elif buf[:1] == b"\n" or (buf[:1] == b"\r" and len(buf) > 1):
            n = 1
        elif buf[:1] == b"\r":
            return  # maybe the first half of CR LF: wait for the next byte
        else:
            n = 0
        del buf[:n]
        self.eaten += n
        self._after_bare = False

    def _proven(self, stop: int) -> Frame | None:
        """`buf[:stop]` as a frame that ends with its CRC, if the CRC proves it (either
        algorithm) and the data ends with `&&`; whatever its length field says."""
        buf = self._buf
        if stop < 6 + 2 + 4 or stop - 10 > self._max_data:
            return None
        crc = bytes(buf[stop - 4: stop])
        data = bytes(buf[6: stop - 4])
        if not data.endswith(b"&&") or not all(b in _HEX for b in crc):
            return None
        value = int(crc, 16)
        if value != hj212_crc(data) and value != modbus_crc(data):
            return None
        two = buf[stop: stop + 2]
        if two == TERMINATOR or two == b"\n\r":
            end = stop + 2
        elif two[:1] == b"\n" or two[:1] == b"\r":
            end = stop + 1  # a lone LF or CR as the terminator
        else:
            end = stop
        raw = bytes(buf[:end])
        del buf[:end]
        self._after_bare = not buf and not raw.endswith(b"\n")  # (the rest of) a CR LF may still be on its way
        return Frame(data=data, crc=crc.decode("ascii"), raw=raw)

    def _start_skip(self, reason: str) -> None:
        self._skip_reason = reason

    def _skip_append(self, data: bytes | bytearray) -> None:
        room = self._max_raw - len(self._skip_raw)
        if room > 0:
            self._skip_raw += data[:room]
        self._skip_count += len(data)

    def _end_skip(self) -> FramingError:
        reason = self._skip_reason or "garbage: bytes outside any frame"
        if self._skip_count > len(self._skip_raw):
            reason += f" ({self._skip_count} bytes, first {len(self._skip_raw)} kept)"
        err = FramingError(reason, bytes(self._skip_raw), self._skip_count)
        self._skip_reason, self._skip_raw, self._skip_count = None, bytearray(), 0
        return err

    def _discard_to_header(self, out: list[Frame | FramingError]) -> bool:
        """Drop bytes up to the next `##`; True when a frame start is now at offset 0."""
        if self._skip_reason is None:
            self._start_skip("garbage: bytes outside any frame")
        at = self._buf.find(HEADER)
        if at < 0:
            # Keep a trailing '#': it may be the first half of the next header.
            keep = 1 if self._buf.endswith(b"#") else 0
            cut = len(self._buf) - keep
            self._skip_append(self._buf[:cut])
            del self._buf[:cut]
            return False
        # In a run of '#' the frame starts at the last pair ("x###0219" → "##0219").
        while at + 2 < len(self._buf) and self._buf[at + 2] == 0x23:
            at += 1
        self._skip_append(self._buf[:at])
        del self._buf[:at]
        out.append(self._end_skip())
        return True

    def _take_frame(self) -> Frame | FramingError | Literal[_Resync.RESYNC] | None:
        """A frame or error from the buffer start, `_RESYNC`, or None when more bytes are needed."""
        buf = self._buf
        if len(buf) < 6:
            return None
        length_field = bytes(buf[2:6])
        if length_field.startswith(b"#"):
            # "###...": the first '#' is stray; the frame may start one byte later.
            self._start_skip("garbage: bytes outside any frame")
            self._skip_append(buf[:1])
            del buf[:1]
            return _RESYNC
        if not length_field.isdigit():
            return self._bad_header(f"bad_length: length field {length_field!r} is not 4 decimal digits")
        length = int(length_field)
        if length > self._max_data:
            return self._bad_header(f"oversize: declared data length {length} exceeds the cap {self._max_data}")
        end = 6 + length + 4 + 2
        # Look for the real end of this frame inside the declared extent (plus terminator).
        window_end = min(len(buf), end)
        crlf = buf.find(TERMINATOR, 6, window_end)
        hdr = buf.find(HEADER, 6, window_end)
        if hdr >= 0 and (crlf < 0 or hdr < crlf):
            if (frame := self._proven(hdr)) is not None:  # no CR LF, next frame right behind
                return frame
            raw = bytes(buf[:hdr])
            del buf[:hdr]
            return FramingError(
                f"truncated: frame declared {length} data bytes but a new frame starts after {hdr - 6}", raw, len(raw))
        if 0 <= crlf < end - 2:
            if (frame := self._proven(crlf)) is not None:  # the length counted CRC/CR LF, or miscounted
                return frame
            raw = bytes(buf[: crlf + 2])
            del buf[: crlf + 2]
            actual = max(crlf - 6 - 4, 0)
            return FramingError(f"length_mismatch: declared {length} data bytes, frame carries {actual}", raw, len(raw))
        if len(buf) < end:
            return None  # more to come; or a whole frame without CR LF: see settle()
        if buf[end - 2 : end] != TERMINATOR:
            # The length was short of the real end: a CR LF or `##` a little later may prove it.
            limit = min(len(buf), 6 + self._max_data + 4 + 2)
            later = [i for i in (buf.find(TERMINATOR, end - 2, limit), buf.find(HEADER, end - 2, limit)) if i >= 0]
            if later and (frame := self._proven(min(later))) is not None:
                return frame
            if (frame := self._proven(end - 2)) is not None:  # no CR LF, something else follows
                return frame
            return self._bad_header(f"bad_terminator: no CR LF after the declared {length} data bytes and CRC")
        raw = bytes(buf[:end])
        del buf[:end]
        crc = raw[6 + length : 6 + length + 4]
        if not all(b in _HEX for b in crc):
            return FramingError(f"bad_crc_field: CRC field {crc!r} is not 4 hex digits", raw, len(raw))
        return Frame(data=raw[6 : 6 + length], crc=crc.decode("ascii"), raw=raw)

    def _bad_header(self, reason: str) -> Literal[_Resync.RESYNC]:
        # The header is unusable, so this frame's extent is unknown: discard to the next `##`.
        self._start_skip(reason)
        self._skip_append(self._buf[:2])
        del self._buf[:2]
        return _RESYNC


def encode_frame(data: bytes | str, *, crc: CrcMode = "strict") -> bytes:
    """Wrap a data segment into a frame with its length and CRC (`off` writes the HJ 212 CRC)."""
    body = data.encode("ascii") if isinstance(data, str) else data
    if len(body) > MAX_DATA_FIELD:
        raise ValueError(f"data segment of {len(body)} bytes does not fit the 4-digit length field")
    return b"##%04d" % len(body) + body + crc_hex(body, crc).encode("ascii") + TERMINATOR
