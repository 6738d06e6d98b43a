"""The one threshold lookup: a condition's bound for a device at a time (a literal, the
device's registry parameter, a rolling baseline, or the default). The engine's conditions
(alerts/conditions.py), the compiled plans and the hot-path guards (alerts/guard.py) all
read thresholds through it, so they can never disagree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alerts.rules import Threshold
from alerts.window import Series


def lookup_threshold(spec: Threshold, params: Mapping[str, Any], series: Series | None, t: int, *,
                     data: bool = True) -> float | None:
    """A threshold's value for a device at time t: the literal value, else the device's
    registry parameter (`params`), else the rolling `baseline` of the same field (`series`,
    x factor, at least `floor`), else `default`; `offset` is added last. None when nothing
    gives a value. With `data=False`, a threshold with a baseline is None (it moves with
    the data): the data-independent bound the guards use."""
    if spec.value is not None:
        return spec.value + spec.offset
    if spec.param:
        p = params.get(spec.param)
        if isinstance(p, (int, float)) and not isinstance(p, bool):
            return float(p) + spec.offset
    if spec.baseline is not None:
        if not data:
            return None
        if series is not None:
            b = spec.baseline
            wms = int(b.window * 1000)
            roll = series.rolling((b.agg, wms, None), b.agg)
            agg = roll.query(t - wms, t, b.min_coverage * b.window * 1000)
            if agg is not None:
                if b.agg == "mean":
                    agg = roll.numpy_value()  # a threshold is shown in alerts: numpy's mean, as always
                base = agg * b.factor
                if spec.floor is not None:
                    base = max(base, spec.floor)
                return base + spec.offset
            if spec.default is None:
                return None
    if spec.default is None:
        return None
    return spec.default + spec.offset
