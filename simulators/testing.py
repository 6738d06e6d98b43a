"""Helpers for checking what a scenario emits: decode one device's telemetry into arrays,
windowed means as the alert rules compute them. Used by tests (ours and integration)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from simulators.message import SimMessage


def ts_ms(value: str | int) -> int:
    """A payload `ts` (RFC 3339 or epoch ms) as epoch ms."""
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Series:
    """One device's healthy telemetry, in payload-timestamp order."""

    t_ms: np.ndarray
    seq: np.ndarray
    values: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def between(self, begin_ms: int, end_ms: int) -> "Series":
        m = (self.t_ms >= begin_ms) & (self.t_ms < end_ms)
        return Series(self.t_ms[m], self.seq[m], {k: v[m] for k, v in self.values.items()})


def series(messages: Iterable[SimMessage], device: str) -> Series:
    docs = [json.loads(m.payload) for m in messages
            if m.device == device and m.topic.startswith("telemetry/") and m.fault is None]
    docs.sort(key=lambda d: ts_ms(d["ts"]))
    names = docs[0]["values"].keys() if docs else []
    return Series(
        np.array([ts_ms(d["ts"]) for d in docs], dtype=np.int64),
        np.array([d["seq"] for d in docs], dtype=np.int64),
        {n: np.array([d["values"][n] for d in docs]) for n in names},
    )


def events(messages: Iterable[SimMessage], device: str | None = None) -> list[dict]:
    return [dict(json.loads(m.payload), device=m.device) for m in messages
            if m.topic.startswith("events/") and (device is None or m.device == device)]


def window_means(t_ms: np.ndarray, x: np.ndarray, window_s: float, *, energy: bool = False) -> np.ndarray:
    """Means over consecutive fixed windows aligned to the epoch (energy mean for dB)."""
    if t_ms.size == 0:
        return np.array([])
    bins = t_ms // int(window_s * 1000)
    _, idx = np.unique(bins, return_inverse=True)
    y = 10 ** (x / 10) if energy else x
    means = np.bincount(idx, weights=y) / np.bincount(idx)
    return 10 * np.log10(means) if energy else means


def rolling_means(t_ms: np.ndarray, x: np.ndarray, window_s: float) -> np.ndarray:
    """The mean of every trailing window ending at a sample (what a sliding rule sees)."""
    w = int(window_s * 1000)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.searchsorted(t_ms, t_ms - w, side="right")
    hi = np.arange(1, t_ms.size + 1)
    return (csum[hi] - csum[lo]) / (hi - lo)


def longest_run_ms(t_ms: np.ndarray, condition: np.ndarray, *, max_gap_ms: int) -> int:
    """Longest span over which `condition` holds at consecutive samples."""
    best = 0
    start = None
    prev = None
    for t, ok in zip(t_ms.tolist(), condition.tolist()):
        if ok and start is not None and prev is not None and t - prev <= max_gap_ms:
            best = max(best, t - start)
        elif ok:
            start = t
        else:
            start = None
        prev = t
    return best
