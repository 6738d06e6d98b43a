"""Per-(device, field) sample buffers kept in time order, and incremental window aggregates.

`Series` holds the samples in two flat `array.array`s (int64 timestamps, float64 values):
the live part is `[_lo:]`; appends are O(1), the oldest samples fall off past the
capacity and the dead head is cut off once it is as long as the capacity, so memory per
series is bounded by about twice the capacity (16 bytes a sample). Samples have absolute
indexes (`base` + position) that survive that compaction.

The window cursors (`Rolling`, exact running aggregates) are alerts/rolling.py.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from alerts.rolling import ROLLING, Rolling, aggregate, energy_mean  # noqa: F401  (re-exported)

# `Series.rolls` until the first cursor is made: most series never get one (a field read
# only by `last` conditions), and an empty dict per series is ~64 bytes. Read-only, so a
# stray write fails instead of leaking cursors into every series.
_NO_ROLLS: Mapping[Any, Rolling] = MappingProxyType({})


class Series:
    __slots__ = ("cap", "span_ms", "max_cap", "_ts", "_v", "_lo", "base", "epoch", "rolls")

    def __init__(self, cap: int, *, span_ms: int = 0, max_cap: int | None = None):
        self.cap = max(4, int(cap))
        self.span_ms = span_ms  # the longest window asked of this series
        self.max_cap = max(self.cap, max_cap or self.cap)
        self._ts = array("q")
        self._v = array("d")
        self._lo = 0  # live samples are _ts[_lo:], _v[_lo:]
        self.base = 0  # absolute index of _ts[0]
        self.epoch = 0  # bumped on any change other than an append / dropping the oldest
        self.rolls: Mapping[Any, Rolling] = _NO_ROLLS  # cursors by window shape, see `rolling`

    def __len__(self) -> int:
        return len(self._ts) - self._lo

    @property
    def ts(self) -> np.ndarray:
        return np.frombuffer(self._ts[self._lo:], dtype=np.int64)

    @property
    def values(self) -> np.ndarray:
        return np.frombuffer(self._v[self._lo:], dtype=np.float64)

    def add(self, ts: int, value: float) -> bool:
        """Insert in time order; a sample with an existing timestamp replaces it (re-delivery
        is idempotent). Returns True when the sample is the newest."""
        tsa = self._ts
        lo = self._lo
        hi = len(tsa)
        if hi > lo and ts <= tsa[-1]:
            i = bisect_left(tsa, ts, lo, hi)
            if tsa[i] == ts:
                self._v[i] = value
                self.epoch += 1
                return i == hi - 1
            if hi - lo >= self.cap and i == lo:
                return False  # older than everything we keep
            tsa.insert(i, ts)
            self._v.insert(i, value)
            self.epoch += 1
            if hi + 1 - lo > self.cap:
                self._lo = lo + 1
            return False
        if hi - lo >= self.cap and self.cap < self.max_cap and ts - tsa[lo] < self.span_ms:
            self.cap = min(self.max_cap, self.cap * 2)
        tsa.append(ts)
        self._v.append(value)
        if hi + 1 - lo > self.cap:
            lo += 1
            if lo >= self.cap:  # cut the dead head off; absolute indexes stay valid
                del tsa[:lo]
                del self._v[:lo]
                self.base += lo
                lo = 0
            self._lo = lo
        return True

    def last(self) -> tuple[int, float] | None:
        if len(self._ts) == self._lo:
            return None
        return self._ts[-1], self._v[-1]

    def oldest_ts(self) -> int:
        """Timestamp of the oldest sample kept (the series must not be empty)."""
        return self._ts[self._lo]

    def window(self, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples with start < ts <= end (numpy copies)."""
        tsa = self._ts
        a = bisect_right(tsa, start_ms, self._lo, len(tsa))
        b = bisect_right(tsa, end_ms, a, len(tsa))
        return np.frombuffer(tsa[a:b], dtype=np.int64), np.frombuffer(self._v[a:b], dtype=np.float64)

    def rolling(self, key: Any, agg: str) -> "Rolling":
        """The cursor for `key` (one per window shape), made for aggregate `agg`."""
        r = self.rolls.get(key)
        if r is None:
            rolls = self.rolls
            if not isinstance(rolls, dict):  # the shared, read-only _NO_ROLLS: a dict of its own now
                rolls = self.rolls = {}
            r = rolls[key] = ROLLING[agg](self, agg)
        return r

    def drop_rollings(self) -> None:
        """Forget every cursor (their window shapes may no longer be asked for)."""
        self.rolls = _NO_ROLLS

    # -- persistence (the bytes of int64 / float64 arrays, oldest first) ----------------
    def dump(self) -> tuple[bytes, bytes]:
        return self._ts[self._lo:].tobytes(), self._v[self._lo:].tobytes()

    @classmethod
    def load(cls, cap: int, ts: bytes, values: bytes, *, span_ms: int = 0, max_cap: int | None = None) -> "Series":
        s = cls(cap, span_ms=span_ms, max_cap=max_cap)
        t = np.frombuffer(ts, dtype=np.int64)[-s.cap:]
        v = np.frombuffer(values, dtype=np.float64)[-s.cap:]
        n = min(len(t), len(v))
        s._ts = array("q", t[:n].tobytes())
        s._v = array("d", v[:n].tobytes())
        return s
