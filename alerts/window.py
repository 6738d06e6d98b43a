"""Per-(device, field) sample buffers: fixed-capacity numpy rings kept in time order.

The arrays are twice the capacity so the live part is always one contiguous slice
(`_ts[_lo:_hi]`): appends are O(1) amortised, a window is a `searchsorted` away, and
memory per device is bounded by the capacity (oldest samples fall off).
"""

from __future__ import annotations

import math

import numpy as np


class Series:
    __slots__ = ("cap", "span_ms", "max_cap", "_ts", "_v", "_lo", "_hi")

    def __init__(self, cap: int, *, span_ms: int = 0, max_cap: int | None = None):
        self.cap = max(4, int(cap))
        self.span_ms = span_ms  # the longest window asked of this series
        self.max_cap = max(self.cap, max_cap or self.cap)
        self._ts = np.zeros(2 * self.cap, dtype=np.int64)
        self._v = np.zeros(2 * self.cap, dtype=np.float64)
        self._lo = 0
        self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def ts(self) -> np.ndarray:
        return self._ts[self._lo:self._hi]

    @property
    def values(self) -> np.ndarray:
        return self._v[self._lo:self._hi]

    def _compact(self) -> None:
        n = self._hi - self._lo
        self._ts[:n] = self._ts[self._lo:self._hi]
        self._v[:n] = self._v[self._lo:self._hi]
        self._lo, self._hi = 0, n

    def add(self, ts: int, value: float) -> bool:
        """Insert in time order; a sample with an existing timestamp replaces it (re-delivery
        is idempotent). Returns True when the sample is the newest."""
        n = self._hi - self._lo
        if n and ts <= self._ts[self._hi - 1]:
            live_ts = self.ts
            i = int(np.searchsorted(live_ts, ts))
            if i < n and live_ts[i] == ts:
                self._v[self._lo + i] = value
                return i == n - 1
            if n >= self.cap and i == 0:
                return False  # older than everything we keep
            if self._hi == 2 * self.cap:
                self._compact()
            pos = self._lo + i
            self._ts[pos + 1:self._hi + 1] = self._ts[pos:self._hi].copy()
            self._v[pos + 1:self._hi + 1] = self._v[pos:self._hi].copy()
            self._ts[pos], self._v[pos] = ts, value
            self._hi += 1
            if self._hi - self._lo > self.cap:
                self._lo += 1
            return False
        if n >= self.cap and self.cap < self.max_cap and ts - int(self._ts[self._lo]) < self.span_ms:
            self._grow()
        if self._hi == 2 * self.cap:
            self._compact()
        self._ts[self._hi], self._v[self._hi] = ts, value
        self._hi += 1
        if self._hi - self._lo > self.cap:
            self._lo += 1
        return True

    def _grow(self) -> None:
        n = self._hi - self._lo
        cap = min(self.max_cap, self.cap * 2)
        ts, v = np.zeros(2 * cap, dtype=np.int64), np.zeros(2 * cap, dtype=np.float64)
        ts[:n], v[:n] = self.ts, self.values
        self._ts, self._v, self._lo, self._hi, self.cap = ts, v, 0, n, cap

    def last(self) -> tuple[int, float] | None:
        if self._hi == self._lo:
            return None
        return int(self._ts[self._hi - 1]), float(self._v[self._hi - 1])

    def window(self, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples with start < ts <= end."""
        ts = self.ts
        a = int(np.searchsorted(ts, start_ms, side="right"))
        b = int(np.searchsorted(ts, end_ms, side="right"))
        return ts[a:b], self._v[self._lo + a:self._lo + b]

    # -- persistence -------------------------------------------------------------------
    def dump(self) -> tuple[bytes, bytes]:
        return self.ts.tobytes(), self.values.tobytes()

    @classmethod
    def load(cls, cap: int, ts: bytes, values: bytes, *, span_ms: int = 0, max_cap: int | None = None) -> "Series":
        s = cls(cap, span_ms=span_ms, max_cap=max_cap)
        t = np.frombuffer(ts, dtype=np.int64)[-s.cap:]
        v = np.frombuffer(values, dtype=np.float64)[-s.cap:]
        n = min(len(t), len(v))
        s._ts[:n], s._v[:n] = t[:n], v[:n]
        s._hi = n
        return s


def aggregate(agg: str, ts: np.ndarray, v: np.ndarray) -> float:
    """Aggregate of a non-empty window. `energy_mean` is the dB energy average
    10*log10(mean(10**(L/10))); `rate` is the change per minute from first to last sample."""
    if agg == "mean":
        return float(v.mean())
    if agg == "max":
        return float(v.max())
    if agg == "min":
        return float(v.min())
    if agg == "median":
        return float(np.median(v))
    if agg == "count":
        return float(len(v))
    if agg == "energy_mean":
        return float(10.0 * math.log10(float(np.mean(np.power(10.0, v / 10.0)))))
    if agg == "rate":
        span = (int(ts[-1]) - int(ts[0])) / 60000.0
        return float((v[-1] - v[0]) / span) if span > 0 else 0.0
    if agg == "last":
        return float(v[-1])
    raise ValueError(f"unknown aggregate {agg}")


def energy_mean(levels) -> float:
    """Energy (logarithmic) mean of sound levels in dB."""
    arr = np.asarray(levels, dtype=np.float64)
    return float(10.0 * math.log10(float(np.mean(np.power(10.0, arr / 10.0)))))
