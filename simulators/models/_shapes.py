"""Vectorised building blocks shared by the signal models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def uniform(rng: np.random.Generator, pair: list[float] | tuple[float, float]) -> float:
    return float(rng.uniform(pair[0], pair[1]))


def diurnal(hours: np.ndarray, table: list[list[float]]) -> np.ndarray:
    """Piecewise-linear daily profile from `[[hour, value], ...]` covering 0–24."""
    xs, ys = zip(*table)
    return np.interp(hours, xs, ys)


def soft_cap(x: np.ndarray, cap: float | np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Identity below `cap - width`, then bends smoothly towards `cap` without reaching it,
    so normal operation stays under a limit without the flat tops a clip would leave."""
    knee = cap - width
    over = np.maximum(x - knee, 0.0)
    return np.where(x > knee, knee + width * np.tanh(over / width), x)


def window_mask(t_ms: np.ndarray, begin_ms: int, end_ms: int) -> np.ndarray:
    return (t_ms >= begin_ms) & (t_ms < end_ms)


@dataclass(frozen=True, slots=True)
class Knots:
    """Slow random variation: values drawn on a fixed time grid for the whole run, then
    interpolated, so any block of samples can be rendered independently of the others."""

    grid_ms: np.ndarray
    values: np.ndarray

    @classmethod
    def normal(cls, rng: np.random.Generator, *, start_ms: int, end_ms: int, spacing_s: float,
               sigma: float, walk: bool = False) -> "Knots":
        step = int(spacing_s * 1000)
        grid = np.arange(start_ms - step, end_ms + 2 * step, step, dtype=np.int64)
        draws = rng.normal(0.0, sigma, grid.size)
        return cls(grid, np.cumsum(draws) if walk else draws)

    @classmethod
    def uniform(cls, rng: np.random.Generator, *, start_ms: int, end_ms: int, spacing_s: float,
                low: float, high: float) -> "Knots":
        step = int(spacing_s * 1000)
        grid = np.arange(start_ms - step, end_ms + 2 * step, step, dtype=np.int64)
        return cls(grid, rng.uniform(low, high, grid.size))

    def at(self, t_ms: np.ndarray) -> np.ndarray:
        return np.interp(t_ms, self.grid_ms, self.values)


@dataclass(frozen=True, slots=True)
class ActiveEpisode:
    """An episode resolved for one device: type, [begin, end) in epoch ms, parameters."""

    type: str
    begin_ms: int
    end_ms: int
    params: dict
