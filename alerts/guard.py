"""Cheap proofs that an idle rule cannot start now, so the engine may skip evaluating it.

Almost every reading of a healthy fleet is far inside every threshold, and a rule that is
idle (nothing pending, firing or counted, see `AlertEngine._reading`) and whose condition
does not hold changes nothing. Proving "does not hold" is much cheaper than evaluating:

* A threshold condition on `last`, `mean`, `energy_mean`, `max`, `min` or `median` can
  only hold if at least one sample in its window lies on the wrong side of its bound,
  because those aggregates never leave the range of their samples (up to rounding, which
  `cold_interval` leaves a margin for). So per device and condition a `Hot` tracker
  remembers the newest time a sample outside the condition's "cold" interval was added;
  while that time is older than the window, the condition cannot hold. A rule whose
  conditions must all hold cannot hold while any one of them cannot.
* A stuck rule (max - min <= tolerance over its window) cannot hold while two samples in
  the window are more than the tolerance apart. A `Jump` tracker remembers the newest
  pair of consecutive samples that far apart.

Bounds are resolved per device (registry parameters), so conditions whose threshold
comes from a baseline (it moves with the data) or whose aggregate is `count` / `rate`
get no tracker and are always evaluated. Trackers only ever err towards evaluating.
"""

from __future__ import annotations

import math
from typing import Any

from alerts.buckets import BucketedSeries
from alerts.threshold import lookup_threshold
from alerts.window import Series

NEVER = -(1 << 62)  # "no such sample": older than any window
LAST_SPAN = 1 << 61  # the span of a `last` condition: its tracker holds NEVER or a real ts

# Aggregates whose value lies within [min, max] of the window's samples (count and rate do not).
BOUNDED_AGGS = frozenset({"last", "mean", "energy_mean", "max", "min", "median"})
_FAR = 1e300  # beyond this a mean may overflow: such samples are always "hot"
_DB_RANGE = (-300.0, 3000.0)  # 10 ** (L / 10) under- or overflows outside this: always "hot"
_INF = math.inf


class Hot:
    """Per device and condition: `ts`, the newest time a sample that could make the
    condition hold (one outside [lo, hi]) was added. The condition cannot hold at event
    time t while `ts <= t - span`.

    For a `last` condition only the newest sample counts: `ts` is the newest sample's time
    when it is hot, else NEVER (and `span` is LAST_SPAN). For a windowed one `ts` only
    grows: a hot sample that is later replaced or evicted keeps the rule evaluated until
    the window has passed it, which is merely conservative.
    """

    __slots__ = ("lo", "hi", "span", "last", "ts")

    def __init__(self, lo: float, hi: float, span_ms: int | None):
        self.lo, self.hi = lo, hi
        self.last = span_ms is None
        self.span = LAST_SPAN if span_ms is None else span_ms
        self.ts = NEVER

    def cold(self, t: int) -> bool:
        """The condition cannot hold at event time t."""
        return self.ts <= t - self.span

    def seen(self, ts: int, x: float, newest: bool) -> None:
        """Account for sample (ts, x) just added; `newest`: it is now the series' last.
        (The engine inlines this in its per-reading loop; keep the two in step.)"""
        if self.last:
            if newest:
                self.ts = NEVER if self.lo <= x <= self.hi else ts
        elif ts > self.ts and not self.lo <= x <= self.hi:
            self.ts = ts

    def scan(self, s: Series | None) -> "Hot":
        """Start from the samples a series already holds (after a restart or a rule change)."""
        self.ts = NEVER
        if s is not None and len(s):
            ts, v = s.ts, s.values
            if self.last:
                if not self.lo <= float(v[-1]) <= self.hi:
                    self.ts = int(ts[-1])
            else:
                for t, x in zip(ts.tolist(), v.tolist()):
                    if not self.lo <= x <= self.hi:
                        self.ts = max(self.ts, t)
                hot = s.hot_ts(self.lo, self.hi) if isinstance(s, BucketedSeries) else None
                if hot is not None:  # a long window: its minute buckets reach further back than the raw tail
                    self.ts = max(self.ts, hot)
        return self


class Jump:
    """Per device and stuck rule: `ts`, the time of the older of the newest two consecutive
    samples more than `tol` apart. A window holding both is not flat (max - min > tol).
    Valid for one series `epoch`: a late insert or a replaced value resets it."""

    __slots__ = ("tol", "span", "ts", "epoch")

    def __init__(self, tol: float, span_ms: int):
        self.tol = tol
        self.span = span_ms
        self.ts = NEVER
        self.epoch = -1

    def not_flat(self, s: Series, t: int) -> bool:
        """Both samples of the jump are still kept and inside the window (t - span, t]."""
        return (self.epoch == s.epoch and self.ts > t - self.span and len(s) > 0
                and self.ts >= s.oldest_ts())

    def appended(self, s: Series, prev: tuple[int, float] | None, ts: int, x: float) -> None:
        """Account for (ts, x) just added to `s`, whose newest sample before was `prev`."""
        if self.epoch != s.epoch:
            self.ts, self.epoch = NEVER, s.epoch
        if prev is not None and ts > prev[0] and abs(x - prev[1]) > self.tol:
            self.ts = prev[0]  # (ts, x) was appended right after prev

    def scan(self, s: Series | None) -> "Jump":
        self.ts, self.epoch = NEVER, (s.epoch if s is not None else -1)
        if s is not None:
            ts, v = s.ts.tolist(), s.values.tolist()
            for i in range(len(ts) - 1, 0, -1):
                if abs(v[i] - v[i - 1]) > self.tol:
                    self.ts = ts[i - 1]
                    break
        return self


def static_threshold(spec: Any, params: dict[str, Any]) -> float | None:
    """A threshold's value for a device when it does not depend on the data (literal,
    registry parameter or default); None when a baseline decides: the engine's own
    lookup (`alerts.threshold.lookup_threshold`) without the data."""
    return None if spec is None else lookup_threshold(spec, params, None, 0, data=False)


def _margin(bound: float) -> float:
    # An aggregate may leave its samples' range by rounding: a few ulps of the bound,
    # far below this (the engine itself re-checks with numpy within 1e-9 of a bound).
    return (abs(bound) + 1.0) * 1e-9


def cold_interval(cond: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """[lo, hi] such that the condition (a `Cond`, evaluated without hysteresis) cannot
    hold while every sample in its window lies inside; None when no such interval is known.
    NaN is never inside, so a NaN sample always counts as hot."""
    op, agg = cond.op, cond.agg
    if op == "is":  # got = value >= 0.5 (agg is always last)
        return (-_INF, math.nextafter(0.5, -_INF)) if cond.want else (0.5, _INF)
    if agg not in BOUNDED_AGGS:
        return None
    exact = agg == "last"  # the value compared is a sample itself
    if op == "outside":
        lo = static_threshold(cond.low, params)
        hi = static_threshold(cond.high, params)
        if lo is None or hi is None:
            return None
        if not exact:
            lo, hi = lo + _margin(lo), hi - _margin(hi)
    else:
        thr = static_threshold(cond.threshold, params)
        if thr is None:
            return None
        if op == "above":  # holds when value > thr
            lo, hi = -_INF, thr if exact else thr - _margin(thr)
        elif op == "at_least":  # value >= thr
            lo, hi = -_INF, math.nextafter(thr, -_INF) if exact else thr - _margin(thr)
        elif op == "below":  # value < thr
            lo, hi = thr if exact else thr + _margin(thr), _INF
        elif op == "at_most":  # value <= thr
            lo, hi = math.nextafter(thr, _INF) if exact else thr + _margin(thr), _INF
        else:
            return None
    if not exact:
        lo_cap, hi_cap = _DB_RANGE if agg == "energy_mean" else (-_FAR, _FAR)
        lo, hi = max(lo, lo_cap), min(hi, hi_cap)
    if not lo <= hi:  # empty (or NaN): every sample is hot
        return None
    return lo, hi
