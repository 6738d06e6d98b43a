"""Incremental window aggregates over a `Series` (alerts/window.py).

Why not numpy ring buffers: the hot path touches one or two samples per reading from
Python, and there numpy costs about twice as much - a store 0.07 vs 0.03 µs, a read plus
arithmetic on the numpy scalar it returns 0.13 vs 0.06 µs (timeit on this machine) - and an
empty ndarray is 112 bytes against 80. numpy still does the whole-window reductions
(`aggregate`, the fallback below) over zero-copy `np.frombuffer` views.

`Rolling` is a cursor over one series for one sliding window `(start, end]`: it keeps
running aggregates (exact sums, monotonic max/min queues, a sorted list for the median)
and is moved forward in O(samples entering + leaving) per evaluation instead of searching
and reducing the whole window each time. Anything that is not an append at the newest end
(a late sample inserted in the middle, a re-delivered duplicate replacing a value) bumps
the series' `epoch`, and every cursor on it recomputes from scratch on its next use.

Sums are exact (samples scaled by 2**128 to Python ints), so a window mean is the
correctly rounded mean of its samples whatever the order they came and went in - no
drift. A sample that cannot be represented that way (NaN, inf, or a tiny value with bits
below 2**-128) makes the cursor fall back to the numpy computation while it is in the
window.


The cursors read the series' arrays (`_ts`, `_v`, `_lo`, `base`, `epoch`) directly: the
two modules are one data structure split for size, and the hot path pays no accessors.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from array import array
from typing import Protocol

import numpy as np


class Series(Protocol):
    """What a cursor reads of its series (`alerts.window.Series`, which holds its cursors and
    so imports this module): the samples in time order, the live ones from `_lo` on."""

    _ts: array[int]
    _v: array[float]
    _lo: int
    base: int  # absolute index of _ts[0]
    epoch: int  # bumped on any change other than an append / dropping the oldest

    def window(self, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]: ...

_SCALE = 2.0 ** 128  # exact fixed-point scale for running sums
_SHIFT = 128
_DEN = [n << _SHIFT for n in range(8192)]  # the denominators of exact means, precomputed
_MAX_DB = 3000.0  # 10 ** (L / 10) overflows a double beyond ~3083 dB


class Rolling:
    """Samples with absolute index in [a, b) of one series: those with start < ts <= end at
    the last `sync`. Subclasses keep the aggregates their `agg` needs."""

    __slots__ = ("s", "agg", "a", "b", "start", "end", "epoch", "bad")

    def __init__(self, s: Series, agg: str = "count"):
        self.s = s
        self.agg = agg
        self.epoch = -1  # forces a recompute on first use
        self.a = self.b = 0
        self.start = self.end = 0
        self.bad = 0  # samples in the window the fast aggregates cannot represent

    def sync(self, start: int, end: int) -> int:
        """Move the window to (start, end]; returns the number of samples in it."""
        s = self.s
        base = s.base
        if self.epoch != s.epoch or start < self.start or end < self.end or self.a < base:
            return self._reset(start, end)
        tsa, va = s._ts, s._v
        b = self.b
        hi = base + len(tsa)
        while b < hi and tsa[b - base] <= end:
            self._add(va[b - base], b)
            b += 1
        a = self.a
        lo = base + s._lo
        if a < b and (a < lo or tsa[a - base] <= start):
            while a < b and (a < lo or tsa[a - base] <= start):
                self._rem(va[a - base])
                a += 1
            self.a = a
            self._trimmed(a)
        self.b = b
        self.start, self.end = start, end
        return b - a

    def query(self, start: int, end: int, need: float) -> float | None:
        """`self.agg` over (start, end], or None when the samples do not cover `need` ms
        (`count` needs no coverage and is 0.0 on an empty window)."""
        n = self.sync(start, end)
        agg = self.agg
        if agg == "count":
            return float(n)
        if not self.covered(need):
            return None
        return self.value(agg)

    def _reset(self, start: int, end: int) -> int:
        s = self.s
        tsa, va, base = s._ts, s._v, s.base
        i = bisect_right(tsa, start, s._lo, len(tsa))
        j = bisect_right(tsa, end, i, len(tsa))
        self._clear()
        self.bad = 0
        for k in range(i, j):
            self._add(va[k], base + k)
        self.a, self.b = base + i, base + j
        self.start, self.end, self.epoch = start, end, s.epoch
        return j - i

    # hooks
    def _clear(self) -> None:
        pass

    def _add(self, x: float, i: int) -> None:
        pass

    def _rem(self, x: float) -> None:
        pass

    def _trimmed(self, a: int) -> None:
        pass

    # window facts (valid after sync)
    def first_ts(self) -> int:
        return self.s._ts[self.a - self.s.base]

    def last_ts(self) -> int:
        return self.s._ts[self.b - 1 - self.s.base]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.s
        i, j = self.a - s.base, self.b - s.base
        return np.frombuffer(s._ts[i:j], dtype=np.int64), np.frombuffer(s._v[i:j], dtype=np.float64)

    def covered(self, need: float) -> bool:
        """The window's samples span at least `need` ms (see engine `_covered`)."""
        n = self.b - self.a
        if n < 2:
            return False
        s = self.s
        base = s.base
        span = s._ts[self.b - 1 - base] - s._ts[self.a - base]
        typical = span / (n - 1)
        return span + typical >= need

    def value(self, agg: str) -> float:
        """`agg` of the (non-empty) window; the same as `aggregate(agg, *self.arrays())`."""
        s = self.s
        base = s.base
        if agg == "last":
            return s._v[self.b - 1 - base]
        if agg == "count":
            return float(self.b - self.a)
        if agg == "rate":
            va, tsa = s._v, s._ts
            span = (tsa[self.b - 1 - base] - tsa[self.a - base]) / 60000.0
            return float((va[self.b - 1 - base] - va[self.a - base]) / span) if span > 0 else 0.0
        if self.bad or agg not in self.fast:
            return aggregate(agg, *self.arrays())
        return self._value(agg)

    fast: frozenset[str] = frozenset()

    def numpy_value(self) -> float:
        """The aggregate computed exactly as `aggregate` does (numpy, bit for bit)."""
        return aggregate(self.agg, *self.arrays())

    def unsure(self) -> bool:
        """True when the fast value may be far from numpy's (see `_Sum`)."""
        return False

    def _value(self, agg: str) -> float:
        raise NotImplementedError


class _Sum(Rolling):
    """Exact running sum. The mean it gives is the correctly rounded mean; numpy's pairwise
    sum may differ in the last bits, by at most ~1e-14 of the mean when no sample is
    negative (`unsure` otherwise)."""

    __slots__ = ("sum", "neg")
    fast = frozenset({"mean"})

    def _clear(self) -> None:
        self.sum = 0
        self.neg = 0

    def _add(self, x: float, i: int) -> None:
        y = x * _SCALE
        if y.is_integer():
            self.sum += int(y)
            if y < 0:
                self.neg += 1
        else:
            self.bad += 1

    def _rem(self, x: float) -> None:
        y = x * _SCALE
        if y.is_integer():
            self.sum -= int(y)
            if y < 0:
                self.neg -= 1
        else:
            self.bad -= 1

    def unsure(self) -> bool:
        return self.neg > 0

    def _value(self, agg: str) -> float:
        return self.sum / ((self.b - self.a) << _SHIFT)

    def query(self, start: int, end: int, need: float) -> float | None:
        # `sync` + `covered` + `value` with the per-sample work inlined (the hot path)
        s = self.s
        base = s.base
        tsa = s._ts
        if self.epoch != s.epoch or start < self.start or end < self.end or self.a < base:
            self._reset(start, end)
            a, b = self.a, self.b
        else:
            va = s._v
            b = self.b
            hi = base + len(tsa)
            total = self.sum
            while b < hi and tsa[b - base] <= end:
                y = va[b - base] * _SCALE
                if y.is_integer():
                    total += int(y)
                    if y < 0:
                        self.neg += 1
                else:
                    self.bad += 1
                b += 1
            a = self.a
            lo = base + s._lo
            while a < b and (a < lo or tsa[a - base] <= start):
                y = va[a - base] * _SCALE
                if y.is_integer():
                    total -= int(y)
                    if y < 0:
                        self.neg -= 1
                else:
                    self.bad -= 1
                a += 1
            self.sum = total
            self.a, self.b = a, b
            self.start, self.end = start, end
        n = b - a
        if n < 2:
            return None
        span = tsa[b - 1 - base] - tsa[a - base]
        if span + span / (n - 1) < need:
            return None
        if self.bad:
            return aggregate(self.agg, *self.arrays())
        return self.sum / _DEN[n] if n < 8192 else self.sum / (n << _SHIFT)


class _Energy(Rolling):
    """Running sum of 10 ** (L / 10) for the dB energy mean."""

    __slots__ = ("sum",)
    fast = frozenset({"energy_mean"})

    def _clear(self) -> None:
        self.sum = 0

    def _add(self, x: float, i: int) -> None:
        if x < _MAX_DB:
            y = 10.0 ** (x / 10.0) * _SCALE
            if y.is_integer():
                self.sum += int(y)
                return
        self.bad += 1

    def _rem(self, x: float) -> None:
        if x < _MAX_DB:
            y = 10.0 ** (x / 10.0) * _SCALE
            if y.is_integer():
                self.sum -= int(y)
                return
        self.bad -= 1

    def _value(self, agg: str) -> float:
        return float(10.0 * math.log10(self.sum / ((self.b - self.a) << _SHIFT)))

    def query(self, start: int, end: int, need: float) -> float | None:
        # `sync` + `covered` + `value` with the per-sample work inlined (the hot path)
        s = self.s
        base = s.base
        tsa = s._ts
        if self.epoch != s.epoch or start < self.start or end < self.end or self.a < base:
            self._reset(start, end)
            a, b = self.a, self.b
        else:
            va = s._v
            b = self.b
            hi = base + len(tsa)
            total = self.sum
            while b < hi and tsa[b - base] <= end:
                x = va[b - base]
                y = 10.0 ** (x / 10.0) * _SCALE if x < _MAX_DB else 0.5
                if y.is_integer():
                    total += int(y)
                else:
                    self.bad += 1
                b += 1
            a = self.a
            lo = base + s._lo
            while a < b and (a < lo or tsa[a - base] <= start):
                x = va[a - base]
                y = 10.0 ** (x / 10.0) * _SCALE if x < _MAX_DB else 0.5
                if y.is_integer():
                    total -= int(y)
                else:
                    self.bad -= 1
                a += 1
            self.sum = total
            self.a, self.b = a, b
            self.start, self.end = start, end
        n = b - a
        if n < 2:
            return None
        span = tsa[b - 1 - base] - tsa[a - base]
        if span + span / (n - 1) < need:
            return None
        if self.bad:
            return aggregate(self.agg, *self.arrays())
        return float(10.0 * math.log10(self.sum / _DEN[n] if n < 8192 else self.sum / (n << _SHIFT)))


class _MaxMin(Rolling):
    """Monotonic queues of absolute indexes: the window max / min in O(1) amortised.

    Each queue is a list whose live part starts at a head offset (`mx[mxh:]`, `mn[mnh:]`)
    rather than a deque: an empty deque already holds a 64-slot block (~760 bytes), and
    there is one such cursor per stuck rule on every device. Samples leaving the window
    only move the head; the dead prefix is cut off once it is longer than the live part
    (and than `_DEAD_MAX`), so a queue stays within about twice its live length and every
    index is copied O(1) times on average."""

    __slots__ = ("mx", "mn", "mxh", "mnh")
    fast = frozenset({"max", "min"})
    _DEAD_MAX = 16

    def _clear(self) -> None:
        self.mx: list[int] = []
        self.mn: list[int] = []
        self.mxh = self.mnh = 0

    def _add(self, x: float, i: int) -> None:
        if x != x:  # NaN: numpy propagates it; leave that to the fallback
            self.bad += 1
            return
        s = self.s
        va, base = s._v, s.base
        mx, mn = self.mx, self.mn
        h = self.mxh
        while len(mx) > h and va[mx[-1] - base] <= x:
            mx.pop()
        mx.append(i)
        h = self.mnh
        while len(mn) > h and va[mn[-1] - base] >= x:
            mn.pop()
        mn.append(i)

    def _rem(self, x: float) -> None:
        if x != x:
            self.bad -= 1

    def _trimmed(self, a: int) -> None:
        self.mxh = _drop_before(self.mx, self.mxh, a)
        self.mnh = _drop_before(self.mn, self.mnh, a)

    def _value(self, agg: str) -> float:
        s = self.s
        return s._v[(self.mx[self.mxh] if agg == "max" else self.mn[self.mnh]) - s.base]

    def max_minus_min(self) -> float:
        """max - min of the (non-empty) window."""
        if self.bad:
            v = self.arrays()[1]
            return float(v.max() - v.min())
        s = self.s
        va, base = s._v, s.base
        return va[self.mx[self.mxh] - base] - va[self.mn[self.mnh] - base]


def _drop_before(queue: list[int], head: int, a: int) -> int:
    """Move `head` past the indexes of `queue` below `a` (samples that left the window);
    cut the dead prefix off once it is longer than the live part and `_MaxMin._DEAD_MAX`.
    Returns the new head."""
    n = len(queue)
    while head < n and queue[head] < a:
        head += 1
    if head > _MaxMin._DEAD_MAX and head + head > n:
        del queue[:head]
        head = 0
    return head


class _Median(Rolling):
    """A sorted copy of the window (bisect insert / delete)."""

    __slots__ = ("srt",)
    fast = frozenset({"median", "max", "min"})

    def _clear(self) -> None:
        self.srt: list[float] = []

    def _add(self, x: float, i: int) -> None:
        if x != x:
            self.bad += 1
        else:
            insort(self.srt, x)

    def _rem(self, x: float) -> None:
        if x != x:
            self.bad -= 1
        else:
            srt = self.srt
            del srt[bisect_left(srt, x)]

    def _value(self, agg: str) -> float:
        srt = self.srt
        if agg == "max":
            return srt[-1]
        if agg == "min":
            return srt[0]
        n = len(srt)
        h = n // 2
        return srt[h] if n % 2 else (srt[h - 1] + srt[h]) / 2


ROLLING: dict[str, type[Rolling]] = {
    "mean": _Sum, "energy_mean": _Energy, "max": _MaxMin, "min": _MaxMin, "stuck": _MaxMin,
    "median": _Median, "count": Rolling, "rate": Rolling, "last": Rolling,
}


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
