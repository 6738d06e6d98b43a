"""Split uploads (PNUM > 1): the parts of one upload, held until all have arrived.

A monitor whose data does not fit one packet sends PNUM packets with PNO 1..PNUM, the
same QN and CN. `Reassembler.add` keeps each part's CP until the set is complete, then
returns the parts in PNO order; the decoder joins their CP items into one reading.

Bounded: at most `max_uploads` incomplete uploads (the oldest is dropped first), at most
`max_parts` parts per upload, and an upload not complete within `timeout_s` is dropped.
Nothing is lost by dropping: every held part was already stored as a dead letter (reason
`split_part`) before the monitor got its answer, so an upload that never completes stays
there, raw bytes and all.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

UploadKey = tuple[str, str, str, int]  # MN, QN, CN, PNUM


@dataclass(slots=True)
class Part:
    cp: str
    raw: bytes


@dataclass(slots=True)
class _Upload:
    started: float
    parts: dict[int, Part] = field(default_factory=dict)


class Reassembler:
    """Not thread-safe: one per gateway, used from its event loop."""

    def __init__(self, *, timeout_s: float = 120.0, max_uploads: int = 1024, max_parts: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.max_uploads = max_uploads
        self.max_parts = max_parts
        self._clock = clock
        self._uploads: OrderedDict[UploadKey, _Upload] = OrderedDict()
        self.expired = 0  # uploads dropped incomplete (timeout or room), for logs/tests

    @property
    def pending(self) -> int:
        return len(self._uploads)

    def add(self, key: UploadKey, pno: int, part: Part) -> list[Part] | None:
        """The parts in PNO order once all PNUM have arrived, else None (held).
        A part re-sent with the same PNO replaces the earlier one."""
        now = self._clock()
        self._expire(now)
        pnum = key[3]
        if pnum > self.max_parts:
            raise ValueError(f"split_limit: PNUM {pnum} exceeds the limit of {self.max_parts} parts per upload")
        upload = self._uploads.get(key)
        if upload is None:
            while len(self._uploads) >= self.max_uploads:
                old_key, _ = self._uploads.popitem(last=False)
                self.expired += 1
                log.warning("hj212: dropping incomplete split upload of MN %s QN %s (too many in progress)",
                            old_key[0], old_key[1])
            upload = self._uploads[key] = _Upload(now)
        upload.parts[pno] = part
        if len(upload.parts) < pnum:
            return None
        del self._uploads[key]
        return [upload.parts[i] for i in range(1, pnum + 1)]

    def _expire(self, now: float) -> None:
        while self._uploads:
            key, upload = next(iter(self._uploads.items()))
            if now - upload.started < self.timeout_s:
                return
            del self._uploads[key]
            self.expired += 1
            log.warning("hj212: split upload of MN %s QN %s incomplete after %.0f s (%d of %d parts); "
                        "its parts stay in the dead letters", key[0], key[1], self.timeout_s, len(upload.parts),
                        key[3])
