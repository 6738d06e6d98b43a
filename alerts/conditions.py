"""Conditions: one condition of a rule judged on a device's window at a time, and the one
threshold lookup (`alerts.threshold.lookup_threshold`, which alerts/guard.py uses too).

A condition reads the device's series for its field through a rolling cursor (exact
running aggregates, alerts/window.py); numpy's aggregate decides whenever the rolling
value is too close to call, and gives the values that go into alerts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alerts.plan import CompiledCond, Device
from alerts.rules import Cond, Threshold
from alerts.threshold import lookup_threshold
from alerts.window import Series

_NO_PARAMS: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True)
class Result:
    """A condition's outcome: active (None: unknown, e.g. too few samples), the value
    judged and the threshold it was compared with."""

    active: bool | None
    value: float | bool | None = None
    threshold: float | bool | None = None



UNKNOWN = (None, None, None)


class Conditions:
    """Judges conditions; `params(device)` gives a device's registry parameters and
    `period_start(schedule, ms)` where a scheduled rule's window starts (alerts/schedule.py)."""

    def __init__(self, params: Callable[[str], Mapping[str, Any]], period_start: Callable[[str, int], int]):
        self._params = params
        self._period_start = period_start

    def threshold(self, spec: Threshold, dev: Device, t: int, series: Series | None) -> float | None:
        """`lookup_threshold` for a device at time t (its registry parameters looked up only
        when the threshold names one)."""
        return lookup_threshold(spec, self._params(dev.device) if spec.param else _NO_PARAMS, series, t)

    def cond(self, c: CompiledCond, dev: Device, t: int, shift: float, schedule: str | None,
              exact: bool = False) -> tuple[bool | None, Any, Any]:
        """(active, value, threshold) of one condition at time t. The decision is always the
        one numpy's aggregate gives; with `exact` the value is numpy's too (it goes into
        alerts), otherwise a mean may be the (last-bits different) rolling one."""
        s = dev.series.get(c.field)
        if s is None or len(s._ts) == s._lo:  # no samples
            return UNKNOWN
        agg = c.agg
        roll = None
        if agg == "last":
            value = s._v[-1]
        else:
            start = t - c.win_ms
            if schedule is not None:
                start = max(start, self._period_start(schedule, t) - 1)
            roll = s.rolls.get(c.rkey) or s.rolling(c.rkey, agg)
            value = roll.query(start, t, c.need)
            if value is None:
                return UNKNOWN
            if c.approx and (exact or c.op == "outside" or roll.unsure()):
                value = roll.numpy_value()
                roll = None
        op = c.op
        if op == "is":
            got = bool(value >= 0.5) if not isinstance(value, bool) else value
            return (got == c.want, got, c.want)
        if op == "outside":
            res = self.compare(c.c, value, dev, t, s, shift)
            return (res.active, res.value, res.threshold)
        thr = c.const
        if thr is None:  # not a literal: the device's parameter, a baseline or the default
            assert c.c.threshold is not None
            thr = self.threshold(c.c.threshold, dev, t, s)
            if thr is None:
                return (None, value, None)
        bound = thr - shift if op == "above" or op == "at_least" else thr + shift
        if roll is not None and c.approx and abs(value - bound) <= (abs(value) + 1.0) * 1e-9:
            value = roll.numpy_value()  # too close to call with the rolling value
        if op == "above":
            active = value > bound
        elif op == "below":
            active = value < bound
        elif op == "at_least":
            active = value >= bound
        else:
            active = value <= bound
        return (active, value, thr)

    def compare(self, c: Cond, value: Any, dev: Device, t: int, s: Series | None, shift: float) -> Result:
        if c.op == "is":
            got = bool(value >= 0.5) if not isinstance(value, bool) else value
            return Result(got == c.want, got, c.want)
        value = float(value)
        if c.op == "outside":
            assert c.low is not None and c.high is not None
            lo, hi = self.threshold(c.low, dev, t, s), self.threshold(c.high, dev, t, s)
            if lo is None or hi is None:
                return Result(None, value)
            bound = lo if value < (lo + hi) / 2 else hi
            return Result(value < lo + shift or value > hi - shift, value, bound)
        assert c.threshold is not None
        thr = self.threshold(c.threshold, dev, t, s)
        if thr is None:
            return Result(None, value)
        active = {"above": value > thr - shift, "below": value < thr + shift,
                  "at_least": value >= thr - shift, "at_most": value <= thr + shift}[c.op]
        return Result(active, value, thr)

    def all_hold(self, conds: Sequence[CompiledCond], dev: Device, t: int, shift: float,
             schedule: str | None, exact: bool = False) -> tuple[bool | None, Any, Any]:
        """All conditions hold: False if any is False, else None if any is unknown; value and
        threshold are the first condition's. Conditions have no side effects, so the first
        False decides."""
        first = None
        unknown = False
        for c in conds:
            r = self.cond(c, dev, t, shift, schedule, exact)
            if first is None:
                first = r
            if r[0] is False:
                return (False, first[1], first[2])
            if r[0] is None:
                unknown = True
        assert first is not None
        return (None if unknown else True, first[1], first[2])

    def attr(self, c: Cond, attrs: dict[str, Any], dev: Device, t: int) -> Result:
        v = attrs.get(c.field)
        if v is None or isinstance(v, str):
            return Result(None)
        if c.op == "is":
            return Result(bool(v) == c.want, bool(v), c.want)
        return self.compare(c, float(v), dev, t, None, 0.0)
