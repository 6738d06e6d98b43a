"""Water-plant outlet: turbidity with slow drift, chlorine, pH, demand-shaped flow
(GB 5749-2022 typical values); a turbidity episode ramps above 1 NTU."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from simulators.models._shapes import ActiveEpisode, Knots, diurnal, uniform, window_mask

_H = 3_600_000
_MIN = 60_000
# Relative demand over the day: morning and evening peaks, night trough.
_DEMAND = [[0, -0.3], [5, -0.35], [7.5, 0.25], [10, 0.1], [12, 0.15], [15, 0.0], [19, 0.3], [22, 0.0], [24, -0.3]]


class WaterParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    turbidity_mean: list[float]
    turbidity_drift_sigma: float
    turbidity_range: list[float]
    free_chlorine_mean: list[float]
    free_chlorine_range: list[float]
    ph_mean: list[float]
    ph_range: list[float]
    flow_mean: list[float]
    outlet_pressure: list[float]
    clear_well_level: list[float]


class WaterSignals:
    kind = "water"
    EPISODE_TYPES = frozenset({"water_turbidity"})

    def __init__(self, *, params: dict[str, Any], rng: np.random.Generator, start_ms: int, end_ms: int,
                 offset_ms: int, episodes: list[ActiveEpisode]) -> None:
        p = self.p = WaterParams.model_validate(params)
        self.offset_ms = offset_ms
        self.episodes = [e for e in episodes if e.type in self.EPISODE_TYPES]
        span = dict(start_ms=start_ms, end_ms=end_ms)
        self.turbidity = uniform(rng, p.turbidity_mean)
        self.turbidity_drift = Knots.normal(rng, spacing_s=3600, sigma=p.turbidity_drift_sigma, **span)
        self.chlorine = uniform(rng, p.free_chlorine_mean)
        self.chlorine_drift = Knots.normal(rng, spacing_s=3600, sigma=0.06, **span)
        self.ph = uniform(rng, p.ph_mean)
        self.ph_drift = Knots.normal(rng, spacing_s=3600, sigma=0.08, **span)
        self.flow = uniform(rng, p.flow_mean)
        self.pressure = uniform(rng, p.outlet_pressure)
        self.level = Knots.uniform(rng, spacing_s=3 * 3600, low=p.clear_well_level[0],
                                   high=p.clear_well_level[1], **span)

    def events(self, begin_ms: int, end_ms: int) -> list[tuple[int, str, dict[str, Any]]]:
        return []

    def render(self, t_ms: np.ndarray, rng: np.random.Generator, interval_ms: float) -> dict[str, np.ndarray]:
        p, t, n = self.p, t_ms.astype(np.float64), t_ms.size
        h = ((t_ms + self.offset_ms) % 86_400_000) / _H
        turbidity = np.clip(self.turbidity + self.turbidity_drift.at(t) + rng.normal(0, 0.01, n), *p.turbidity_range)
        demand = diurnal(h, _DEMAND)
        flow = self.flow * (1 + demand) + rng.normal(0, self.flow * 0.01, n)
        for ep in self.episodes:
            mask = window_mask(t_ms, ep.begin_ms, ep.end_ms)
            if mask.any():
                ramp = float(ep.params.get("ramp_min", 10)) * _MIN
                f = np.where(mask, np.clip((t - ep.begin_ms) / ramp, 0, 1), 0.0)
                level = float(ep.params.get("level", 1.6))
                turbidity = turbidity + (level - turbidity) * f + np.where(mask, rng.normal(0, 0.05, n), 0.0)
        return {
            "turbidity": turbidity,
            "free_chlorine": np.clip(self.chlorine + self.chlorine_drift.at(t) + rng.normal(0, 0.01, n),
                                     *p.free_chlorine_range),
            "ph": np.clip(self.ph + self.ph_drift.at(t) + rng.normal(0, 0.02, n), *p.ph_range),
            "flow": flow,
            "outlet_pressure": self.pressure - 0.03 * demand + rng.normal(0, 0.003, n),
            "clear_well_level": np.clip(self.level.at(t) - 8 * demand + rng.normal(0, 0.3, n), 0, 100),
        }
