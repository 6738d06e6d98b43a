"""Long windows kept as minute buckets instead of raw samples (issue #12).

A 24-hour mean over a monitor reporting every 10 s is 8,640 samples; kept raw, a series
of that field is capped at `max_samples_per_series` (8192, so the window never spans the
day at that rate, and at 1 s it spans 2.3 h and never reaches its coverage), and the
engine's state snapshot rewrote it (up to 128 KiB) every 5 s for every monitor. So a
window is *long* when it is longer than one hour (`LONG_WINDOW_MS`) and its aggregate can
be computed from per-bucket summaries (`mean max min count`): it is kept as one bucket per
minute (sample count, sum, max, min, first and last sample time: 44 bytes), at most
`ceil(window / 1 min) + 1` buckets (1,441 for 24 h) whatever the report rate.

Why over one hour: the shorter windows are the enforcement ones (10, 15, 20 min, the
hourly PM10 stop value), whose means stay sample-exact on raw samples; above an hour the
minute edge below changes at most 1/60 of the window, and a raw window there costs far
more than its buckets. `median`, `energy_mean`, `rate` and stuck rules always use raw
samples (a minute summary cannot give them exactly).

What a long window holds: the buckets whose first sample lies in `(start, end]`, whole.
So at its old edge it leaves out the samples of the one minute that straddles the edge
(at most one minute of a window over an hour), and it never reaches outside the window;
coverage is judged, as for raw samples, on the span from the first to the last sample
and the sample count. The mean is the exact sum of the bucket sums over their counts.

The series of such a field (`BucketedSeries`) also keeps its raw samples for the longest
raw window of the field and at least the late tolerance plus one minute: `last`, the
short windows and the guards read them, and a re-delivered sample (same timestamp) is
found there and its bucket rebuilt from the raw samples, so re-delivery stays idempotent.
A late sample (within the tolerance) lands in its minute's bucket; one older than the
kept buckets is dropped, as a raw series drops what is older than it keeps.

Persistence: the raw tail as any series (`dump`), and the buckets one row per hour
(`CHUNK` buckets, at most 2.6 KB, one SQLite page): a snapshot writes only the hours that
changed since the last one (normally the current hour) and drops the expired ones. A
snapshot from before this (a long field's whole window as raw samples) is migrated when
loaded: its samples are summed into buckets.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import numpy as np

from alerts.window import Series

BUCKET_MS = 60_000
LONG_WINDOW_MS = 3_600_000  # windows longer than this are bucketed (see the module docstring)
BUCKET_AGGS = frozenset({"mean", "max", "min", "count"})
CHUNK = 60  # buckets per stored row: one hour
_COLS = (("bf", "q"), ("bl", "q"), ("bn", "i"), ("bs", "d"), ("bmax", "d"), ("bmin", "d"))
BUCKET_BYTES = sum(array(c).itemsize for _, c in _COLS)  # 44
_COMPACT = 32  # cut the dead head off once this many buckets have expired
_NO_CHUNK = 1 << 62

_SCALE = 2.0 ** 128  # the exact fixed-point sums of alerts/rolling.py
_SHIFT = 128


def _nan_first(x: float) -> float:
    return math.inf if x != x else x  # a NaN wins the max, as numpy's propagates it


def _nan_last(x: float) -> float:
    return -math.inf if x != x else x


def bucketed(agg: str, window_ms: float) -> bool:
    """A condition (or baseline) with this aggregate and window reads minute buckets."""
    return agg in BUCKET_AGGS and window_ms > LONG_WINDOW_MS


class BucketedSeries(Series):
    """A `Series` (the raw recent samples) plus minute buckets over `long_ms`.

    The minute being filled (the *open* bucket) is plain attributes (`ok` its minute, -1
    for none; `of` `ol` `on` `os` `omax` `omin`): a reading then touches this object and
    its raw arrays only, not six more buffers (which, spread over a fleet, cost more in
    cache misses than the arithmetic). Closed minutes are parallel flat arrays (`bf` first
    ts, `bl` last ts, `bn` count, `bs` sum, `bmax`, `bmin`), live from `blo`, in time
    order, one per minute that had samples; absolute bucket indexes are `bbase` + position
    (cursors keep them across compaction). `bepoch` is bumped when a closed minute changes
    (a late or re-delivered sample); cursors then recompute."""

    __slots__ = ("long_ms", "nkeep", "bf", "bl", "bn", "bs", "bmax", "bmin", "blo", "bbase", "bepoch",
                 "bdirty", "bsaved", "ok", "of", "ol", "on", "os", "omax", "omin")

    def __init__(self, cap: int, *, span_ms: int = 0, max_cap: int | None = None, long_ms: int):
        super().__init__(cap, span_ms=span_ms, max_cap=max_cap)
        self.long_ms = long_ms
        self.nkeep = -(-long_ms // BUCKET_MS) + 1  # a window touches at most this many minutes
        for name, code in _COLS:
            setattr(self, name, array(code))
        self.blo = self.bbase = self.bepoch = 0
        self.bdirty = _NO_CHUNK  # the oldest stored hour changed since the last dump (besides the newest)
        self.bsaved = _NO_CHUNK  # expired hours below this were dropped from the store
        self.ok = -1
        self.of = self.ol = self.on = 0
        self.os = self.omax = self.omin = 0.0

    def nbuckets(self) -> int:
        return len(self.bf) - self.blo + (self.ok >= 0)

    def minutes(self) -> list[tuple[int, int, int, float, float, float]]:
        """Every minute kept as (first ts, last ts, count, sum, max, min), oldest first."""
        cols = [getattr(self, name)[self.blo:].tolist() for name, _ in _COLS]
        out = list(zip(*cols))
        if self.ok >= 0:
            out.append((self.of, self.ol, self.on, self.os, self.omax, self.omin))
        return out

    def _newest_key(self) -> int:
        return self.ok if self.ok >= 0 else self.bf[-1] // BUCKET_MS if len(self.bf) > self.blo else -1

    # -- adding ----------------------------------------------------------------------------
    def add(self, ts: int, value: float) -> bool:
        tsa = self._ts
        lo = self._lo
        hi = len(tsa)
        if hi > lo and ts <= tsa[-1]:  # not an append: late, or re-delivered
            i = bisect_left(tsa, ts, lo, hi)
            if tsa[i] == ts:
                old = self._v[i]
                newest = Series.add(self, ts, value)
                self._replaced(ts, old, value)
                return newest
            if hi - lo >= self.cap and i == lo:
                return False  # older than the raw samples kept: dropped there, so here too
            newest = Series.add(self, ts, value)
        else:  # an append (the hot path): `Series.add`'s own, inlined
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
            newest = True
        if ts // BUCKET_MS == self.ok:  # the open minute: `_badd` inlined
            self.on += 1
            self.os += value
            if value > self.omax or value != value:  # a NaN stays (numpy's max propagates it)
                self.omax = value
            if value < self.omin or value != value:
                self.omin = value
            if ts > self.ol:
                self.ol = ts
            elif ts < self.of:
                self.of = ts
        else:
            self._badd(ts, value)
        return newest

    def _badd(self, ts: int, x: float) -> None:
        k = ts // BUCKET_MS
        if k == self.ok:
            self.on += 1
            self.os += x
            if x > self.omax or x != x:
                self.omax = x
            if x < self.omin or x != x:
                self.omin = x
            self.ol, self.of = max(self.ol, ts), min(self.of, ts)
        elif k < self._newest_key() or (self.ok < 0 and k == self._newest_key()):
            self._blate(k, ts, x)
        else:
            self._open(k, ts, x)

    def _open(self, k: int, ts: int, x: float) -> None:
        """A new newest minute: close the open one into the arrays, expire the oldest."""
        if self.ok >= 0:
            if self.ok // CHUNK != k // CHUNK and self.ok // CHUNK < self.bdirty:
                self.bdirty = self.ok // CHUNK  # the previous hour's last updates are not stored yet
            self.bf.append(self.of)
            self.bl.append(self.ol)
            self.bn.append(self.on)
            self.bs.append(self.os)
            self.bmax.append(self.omax)
            self.bmin.append(self.omin)
        self.ok, self.of, self.ol, self.on, self.os, self.omax, self.omin = k, ts, ts, 1, x, x, x
        bf = self.bf
        oldest = k - self.nkeep + 1
        lo = self.blo
        while lo < len(bf) and bf[lo] // BUCKET_MS < oldest:
            lo += 1
        if lo != self.blo:
            self.blo = lo
            if lo >= _COMPACT:
                for name, _ in _COLS:
                    del getattr(self, name)[:lo]
                self.bbase += lo
                self.blo = 0

    def _find(self, k: int) -> tuple[int, bool]:
        """Position of closed minute k's bucket, or where it would go; and whether it exists."""
        bf = self.bf
        i = bisect_left(bf, k * BUCKET_MS, self.blo, len(bf))
        return i, i < len(bf) and bf[i] // BUCKET_MS == k

    def _blate(self, k: int, ts: int, x: float) -> None:
        """A late sample in a closed minute."""
        if k <= self._newest_key() - self.nkeep:
            return  # older than any window kept
        i, found = self._find(k)
        if found:
            self.bn[i] += 1
            self.bs[i] += x
            if x > self.bmax[i] or x != x:
                self.bmax[i] = x
            if x < self.bmin[i] or x != x:
                self.bmin[i] = x
            self.bl[i] = max(self.bl[i], ts)
            self.bf[i] = min(self.bf[i], ts)
        else:
            for (name, _), v in zip(_COLS, (ts, ts, 1, x, x, x)):
                getattr(self, name).insert(i, v)
        self.bepoch += 1
        self.bdirty = min(self.bdirty, k // CHUNK)

    def _replaced(self, ts: int, old: float, new: float) -> None:
        """A re-delivered sample replaced `old` by `new`: rebuild its minute from the raw samples
        (the raw tail spans the late tolerance plus a minute, so it holds the whole minute);
        if it somehow does not, adjust the sum and widen max / min (never narrower than true)."""
        k = ts // BUCKET_MS
        is_open = k == self.ok
        i, found = self._find(k)
        if not (is_open or found):
            return
        t0 = k * BUCKET_MS
        oldest = self._ts[self._lo]
        if oldest < t0 or oldest == (self.of if is_open else self.bf[i]):  # the raw tail holds the whole minute
            wv = self.window(t0 - 1, t0 + BUCKET_MS - 1)[1].tolist()
            total = 0.0
            for x in wv:  # in time order, as the appends summed them: re-delivery stays bit-identical
                total += x
            n, mx, mn = len(wv), max(wv, key=_nan_first), min(wv, key=_nan_last)
        elif is_open:
            n, total, mx, mn = self.on, self.os + new - old, max(self.omax, new), min(self.omin, new)
        else:
            n, total, mx, mn = self.bn[i], self.bs[i] + new - old, max(self.bmax[i], new), min(self.bmin[i], new)
        if is_open:
            self.on, self.os, self.omax, self.omin = n, total, mx, mn
            return  # cursors read the open minute live
        self.bn[i], self.bs[i], self.bmax[i], self.bmin[i] = n, total, mx, mn
        self.bepoch += 1  # cursors' exact sums hold the old value
        self.bdirty = min(self.bdirty, k // CHUNK)

    # -- reading ---------------------------------------------------------------------------
    def rolling(self, key: Any, agg: str) -> Any:
        """The cursor for `key` (agg, window ms, schedule): minute buckets for a long window."""
        r = self.rolls.get(key)
        if r is None:
            if not bucketed(agg, key[1]):
                return Series.rolling(self, key, agg)
            r = BucketRolling(self, agg)
            if not isinstance(self.rolls, dict):
                self.rolls = {}
            self.rolls[key] = r  # type: ignore[index]
        return r

    def hot_ts(self, lo: float, hi: float) -> int | None:
        """The last sample time of the newest minute holding a sample outside [lo, hi]
        (or a NaN), None when none does (`alerts.guard.Hot.scan`)."""
        if self.ok >= 0 and not (lo <= self.omin and self.omax <= hi):
            return self.ol
        i = self.blo
        mx = np.frombuffer(self.bmax[i:], dtype=np.float64)
        mn = np.frombuffer(self.bmin[i:], dtype=np.float64)
        hot = np.flatnonzero(~((mn >= lo) & (mx <= hi)))
        return int(self.bl[i + int(hot[-1])]) if len(hot) else None

    # -- persistence -----------------------------------------------------------------------
    def dump_buckets(self) -> tuple[list[tuple[int, bytes]], int | None]:
        """The hours changed since the last dump as (chunk, bytes) rows, and the chunk below
        which stored rows have expired (None when that did not move)."""
        if self.nbuckets() == 0:
            return [], None
        newest = self._newest_key() // CHUNK
        first = min(self.bdirty, newest)
        oldest = (self.bf[self.blo] if len(self.bf) > self.blo else self.of) // BUCKET_MS // CHUNK
        rows = [(c, self._chunk_bytes(c)) for c in range(max(first, oldest), newest + 1)]
        self.bdirty = _NO_CHUNK
        drop = None
        if oldest != self.bsaved:
            drop = self.bsaved = oldest
        return [(c, b) for c, b in rows if b], drop

    def _chunk_bytes(self, c: int) -> bytes:
        i, _ = self._find(c * CHUNK)
        j, _ = self._find((c + 1) * CHUNK)
        opened = self.ok >= 0 and self.ok // CHUNK == c
        vals = (self.of, self.ol, self.on, self.os, self.omax, self.omin)
        return b"".join(getattr(self, name)[i:j].tobytes() + (array(code, [v]).tobytes() if opened else b"")
                        for (name, code), v in zip(_COLS, vals))

    def load_buckets(self, chunks: Iterable[tuple[int, bytes]]) -> None:
        """Restore the buckets from stored hours (their rows in any order)."""
        cols: dict[str, list[bytes]] = {name: [] for name, _ in _COLS}
        for _, data in sorted(chunks):
            n = len(data) // BUCKET_BYTES
            pos = 0
            for name, code in _COLS:
                size = n * array(code).itemsize
                cols[name].append(data[pos:pos + size])
                pos += size
        for name, code in _COLS:
            setattr(self, name, array(code, b"".join(cols[name])))
        self.blo = self.bbase = 0
        self.ok = -1
        self.bepoch += 1
        if len(self.bf):  # drop what expired while the service was down
            oldest = self.bf[-1] // BUCKET_MS - self.nkeep + 1
            while self.blo < len(self.bf) and self.bf[self.blo] // BUCKET_MS < oldest:
                self.blo += 1
            self.bsaved = self.bf[self.blo] // BUCKET_MS // CHUNK
            if len(self.bf) > self.blo:  # the newest minute is the open one: it may still be filling
                vals = [getattr(self, name).pop() for name, _ in _COLS]
                self.ok = vals[0] // BUCKET_MS
                self.of, self.ol, self.on, self.os, self.omax, self.omin = vals

    @classmethod
    def restore(cls, cap: int, ts: bytes, values: bytes, *, span_ms: int, max_cap: int, long_ms: int,
                chunks: list[tuple[int, bytes]]) -> "BucketedSeries":
        """A long field's series from its snapshot: raw tail + stored hours; or, from a snapshot
        without stored hours (made before buckets, or before the field had a long window),
        the raw samples summed into buckets (all of them then dirty, so the next snapshot
        stores them and the short raw row replaces the long one)."""
        s = cls(cap, span_ms=span_ms, max_cap=max_cap, long_ms=long_ms)
        t = np.frombuffer(ts, dtype=np.int64)
        v = np.frombuffer(values, dtype=np.float64)
        n = min(len(t), len(v))
        t, v = t[:n], v[:n]
        if chunks:
            s.load_buckets(chunks)
        else:
            for x_ts, x in zip(t.tolist(), v.tolist()):
                s._badd(x_ts, x)
            if s.nbuckets():
                s.bdirty = (s.bf[s.blo] if len(s.bf) > s.blo else s.of) // BUCKET_MS // CHUNK
        s._ts = array("q", t[-s.cap:].tobytes())
        s._v = array("d", v[-s.cap:].tobytes())
        return s


def new_series(shape: tuple[int, int, int], max_cap: int) -> Series:
    """An empty series of `shape` (capacity, raw window ms, long window ms: the engine's
    `_series_shape`): with minute buckets when it has a long window."""
    cap, window_ms, long_ms = shape
    if long_ms:
        return BucketedSeries(cap, span_ms=window_ms, max_cap=max_cap, long_ms=long_ms)
    return Series(cap, span_ms=window_ms, max_cap=max_cap)


def restore_series(shape: tuple[int, int, int], ts: bytes, values: bytes, max_cap: int,
                   chunks: list[tuple[int, bytes]]) -> Series:
    """A series of `shape` from its snapshot row (and its stored hours, when bucketed)."""
    cap, window_ms, long_ms = shape
    if long_ms:
        return BucketedSeries.restore(cap, ts, values, span_ms=window_ms, max_cap=max_cap, long_ms=long_ms,
                                      chunks=chunks)
    return Series.load(cap, ts, values, span_ms=window_ms, max_cap=max_cap)


def group_chunks(rows: Iterable[Any]) -> dict[tuple[str, str], list[tuple[int, bytes]]]:
    """Stored bucket rows (device, field, chunk, data) by (device, field)."""
    out: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    for r in rows:
        out.setdefault((r["device"], r["field"]), []).append((r["chunk"], r["data"]))
    return out


class BucketRolling:
    """A window cursor over a `BucketedSeries`' minute buckets (the interface `Rolling`
    offers conditions: `query`, `numpy_value`, `unsure`). Keeps the exact sum and the
    count of the closed buckets [a, b); the open minute is read live."""

    __slots__ = ("s", "agg", "a", "b", "start", "end", "epoch", "sum", "n", "bad", "neg", "inc")

    def __init__(self, s: BucketedSeries, agg: str):
        self.s = s
        self.agg = agg
        self.epoch = -1
        self.a = self.b = 0
        self.start = self.end = 0
        self.sum = self.n = self.bad = self.neg = 0
        self.inc = False  # the open minute is in the window (after `sync`)

    def _add(self, j: int, sign: int) -> None:
        s = self.s
        y = s.bs[j] * _SCALE
        if y.is_integer():
            self.sum += sign * int(y)
            if y < 0:
                self.neg += sign
        else:
            self.bad += sign
        self.n += sign * s.bn[j]

    def sync(self, start: int, end: int) -> int:
        """Move the window to (start, end]; returns the number of samples in it."""
        s = self.s
        bf, base = s.bf, s.bbase
        hi = base + len(bf)
        if self.epoch != s.bepoch or start < self.start or end < self.end or self.a < base or self.b > hi:
            self.sum = self.n = self.bad = self.neg = 0
            self.a = self.b = base + s.blo
            self.epoch = s.bepoch
        b = self.b
        while b < hi and bf[b - base] <= end:
            self._add(b - base, 1)
            b += 1
        a = self.a
        lo = base + s.blo
        while a < b and (a < lo or bf[a - base] <= start):
            self._add(a - base, -1)
            a += 1
        self.a, self.b = a, b
        self.start, self.end = start, end
        self.inc = s.ok >= 0 and start < s.of <= end
        return self.n + (s.on if self.inc else 0)

    def query(self, start: int, end: int, need: float) -> float | None:
        """`agg` over (start, end], or None when the samples do not cover `need` ms
        (`count` needs no coverage and is 0.0 on an empty window)."""
        n = self.sync(start, end)
        if self.agg == "count":
            return float(n)
        if n < 2:
            return None
        s = self.s
        first = s.bf[self.a - s.bbase] if self.a < self.b else s.of
        span = (s.ol if self.inc else s.bl[self.b - 1 - s.bbase]) - first
        if span + span / (n - 1) < need:
            return None
        if self.agg != "mean" or self.bad or (self.inc and not (s.os * _SCALE).is_integer()):
            return self.numpy_value()
        total = self.sum
        if self.inc:
            total += int(s.os * _SCALE)
        return total / (n << _SHIFT)

    def unsure(self) -> bool:
        """True when the exact mean may differ from numpy's by more than the last bits."""
        return self.neg > 0 or (self.inc and self.s.os < 0)

    def _arrays(self, name: str) -> np.ndarray:
        s = self.s
        i, j = self.a - s.bbase, self.b - s.bbase
        col = getattr(s, name)
        out = np.frombuffer(col[i:j], dtype=np.float64 if col.typecode == "d" else np.int32)
        if self.inc:
            out = np.append(out, getattr(s, "o" + name[1:]))
        return out

    def numpy_value(self) -> float:
        """The aggregate computed with numpy over the window's buckets (after a `query`)."""
        agg = self.agg
        if agg == "max":
            return float(self._arrays("bmax").max())
        if agg == "min":
            return float(self._arrays("bmin").min())
        n = int(self._arrays("bn").sum())
        if agg == "count":
            return float(n)
        return float(self._arrays("bs").sum() / n)
