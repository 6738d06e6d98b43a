"""District-heating substation: weather-compensated temperatures, CJJ 34 pressures,
make-up water; a leak drops secondary return pressure and drives make-up flow up."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from simulators.models._shapes import ActiveEpisode, Knots, uniform, window_mask

_H = 3_600_000
_MIN = 60_000


class HeatingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    outdoor_mean: float
    outdoor_amplitude: float
    secondary_supply_base: float
    secondary_supply_slope: float
    secondary_delta_t: list[float]
    primary_supply_base: float
    primary_supply_slope: float
    primary_return_base: float
    primary_supply_pressure: float
    primary_return_pressure: float
    secondary_supply_pressure: float
    secondary_return_pressure: list[float]
    pressure_noise: float
    primary_flow_base: list[float]
    makeup_flow_base: list[float]
    makeup_tank_range: list[float]
    makeup_tank_period_h: list[float]


class HeatingSignals:
    kind = "heating"
    EPISODE_TYPES = frozenset({"substation_leak"})

    def __init__(self, *, params: dict[str, Any], rng: np.random.Generator, start_ms: int, end_ms: int,
                 offset_ms: int, episodes: list[ActiveEpisode]) -> None:
        p = self.p = HeatingParams.model_validate(params)
        self.offset_ms = offset_ms
        self.episodes = [e for e in episodes if e.type in self.EPISODE_TYPES]
        span = dict(start_ms=start_ms, end_ms=end_ms)
        self.outdoor_drift = Knots.normal(rng, spacing_s=7200, sigma=1.5, **span)
        self.supply_drift = Knots.normal(rng, spacing_s=1800, sigma=0.6, **span)
        self.delta_t = uniform(rng, p.secondary_delta_t)
        self.return_setpoint = uniform(rng, p.secondary_return_pressure)
        self.flow_base = uniform(rng, p.primary_flow_base)
        self.makeup_base = uniform(rng, p.makeup_flow_base)
        self.makeup_drift = Knots.normal(rng, spacing_s=1800, sigma=0.25, **span)
        self.tank_period_ms = uniform(rng, p.makeup_tank_period_h) * _H
        self.tank_phase = uniform(rng, (0, 1))

    def events(self, begin_ms: int, end_ms: int) -> list[tuple[int, str, dict[str, Any]]]:
        return []

    def render(self, t_ms: np.ndarray, rng: np.random.Generator, interval_ms: float) -> dict[str, np.ndarray]:
        p, t, n = self.p, t_ms.astype(np.float64), t_ms.size
        h = ((t_ms + self.offset_ms) % 86_400_000) / _H
        noise = lambda sigma: rng.normal(0, sigma, n)  # noqa: E731 - local shorthand
        outdoor = (p.outdoor_mean + p.outdoor_amplitude * np.cos(2 * math.pi * (h - 14.5) / 24)
                   + self.outdoor_drift.at(t) + noise(0.1))
        cold = -outdoor  # degrees below zero drive the weather compensation
        sec_supply = np.clip(p.secondary_supply_base + p.secondary_supply_slope * cold
                             + self.supply_drift.at(t) + noise(0.2), 45, 65)
        sec_return = np.clip(sec_supply - self.delta_t - 0.1 * cold + noise(0.2), 35, 50)
        pri_supply = np.clip(p.primary_supply_base + p.primary_supply_slope * cold + noise(0.5), 70, 120)
        pri_return = np.clip(p.primary_return_base + 0.3 * cold + noise(0.4), 40, 60)
        sec_supply_p = p.secondary_supply_pressure + noise(p.pressure_noise)
        sec_return_p = self.return_setpoint + noise(p.pressure_noise)
        makeup = self.makeup_base * np.exp(self.makeup_drift.at(t)) + np.abs(noise(0.02))
        lo, hi = p.makeup_tank_range
        cycle = (t / self.tank_period_ms + self.tank_phase) % 1.0
        tank = hi - (hi - lo) * cycle + noise(0.2)  # slow draw-down, then a refill
        leak = np.zeros(n, bool)

        for ep in self.episodes:
            mask = window_mask(t_ms, ep.begin_ms, ep.end_ms)
            if not mask.any():
                continue
            ramp = float(ep.params.get("ramp_min", 10)) * _MIN
            f = np.where(mask, np.clip((t - ep.begin_ms) / ramp, 0, 1), 0.0)
            drop = float(ep.params.get("pressure_drop", 0.09))
            sec_return_p = sec_return_p - drop * f
            sec_supply_p = sec_supply_p - 0.8 * drop * f
            makeup = makeup + self.makeup_base * float(ep.params.get("makeup_factor", 12)) * f
            elapsed_h = np.maximum(t - ep.begin_ms, 0) / _H
            tank = np.where(mask, np.maximum(tank - float(ep.params.get("tank_drop_per_h", 15)) * elapsed_h, 5), tank)
            if ep.params.get("leak_detected", False):
                leak |= mask & (f >= 1)

        return {
            "primary_supply_temp": pri_supply,
            "primary_return_temp": pri_return,
            "secondary_supply_temp": sec_supply,
            "secondary_return_temp": sec_return,
            "outdoor_temp": outdoor,
            "primary_supply_pressure": p.primary_supply_pressure + noise(p.pressure_noise),
            "primary_return_pressure": p.primary_return_pressure + noise(p.pressure_noise),
            "secondary_supply_pressure": sec_supply_p,
            "secondary_return_pressure": sec_return_p,
            "primary_flow": self.flow_base * (1 + 0.02 * cold) + noise(1.0),
            "makeup_flow": makeup,
            "makeup_tank_level": np.clip(tank, 0, 100),
            "circulation_pump_on": np.ones(n, bool),
            "leak_detected": leak,
        }
