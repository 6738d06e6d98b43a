"""Construction-site dust monitor: PM, noise, weather, spray and six-100% signals, plus
vehicle-exit events. Shapes and limits: DOMAIN.md §1, §2, §5."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from simulators.models._shapes import ActiveEpisode, Knots, diurnal, soft_cap, uniform, window_mask

_H = 3_600_000
_MIN = 60_000
_PLATE_CHARS = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"))


class DustParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pm10_profile: list[list[float]]
    pm10_site_scale: list[float]
    pm10_drift_sigma: float
    pm10_noise: float
    pm10_soft_cap: float
    burst_rate_per_h: float
    burst_amplitude: list[float]
    burst_rise_min: list[float]
    spray_delay_min: list[float]
    spray_decay_tau_min: list[float]
    spray_run_min: list[float]
    pm25_ratio: list[float]
    tsp_ratio: list[float]
    humid_overread_above: float
    noise_profile: list[list[float]]
    noise_drift_sigma: float
    noise_white: float
    noise_cap_day: float
    noise_cap_night: float
    noise_max_over: list[float]
    noise_max_cap_night: float
    truck_noise_max: list[float]
    truck_pm10: list[float]
    exits_per_h_work: float
    exits_per_h_night: float
    exits_per_h_other: float
    wash_seconds: list[float]
    plate_prefix: str
    temperature_mean: float
    temperature_amplitude: float
    humidity_mean: float
    pressure_kpa: list[float]
    wind_speed_mean: float


def is_night(hours: np.ndarray) -> np.ndarray:
    """GB 12523 night: 22:00–06:00 local."""
    return (hours >= 22) | (hours < 6)


def _exit_rate(hours: np.ndarray, p: DustParams) -> np.ndarray:
    work = (hours >= 7) & (hours < 18)
    transport = (hours >= 22) | (hours < 4)
    return np.where(work, p.exits_per_h_work, np.where(transport, p.exits_per_h_night, p.exits_per_h_other))


class DustSignals:
    """One device's signals. The plan (bursts, exits, slow drifts) is drawn once for the
    whole run; `render` then evaluates any block of sample times."""

    kind = "dust"
    EPISODE_TYPES = frozenset({"dust_episode", "noise_night", "night_transport"})

    def __init__(self, *, params: dict[str, Any], rng: np.random.Generator, start_ms: int, end_ms: int,
                 offset_ms: int, episodes: list[ActiveEpisode]) -> None:
        p = self.p = DustParams.model_validate(params)
        self.offset_ms = offset_ms
        self.episodes = [e for e in episodes if e.type in self.EPISODE_TYPES]
        span = dict(start_ms=start_ms, end_ms=end_ms)
        self.scale = uniform(rng, p.pm10_site_scale)
        self.drift = Knots.normal(rng, spacing_s=1200, sigma=p.pm10_drift_sigma, **span)
        self.pm25_ratio = Knots.uniform(rng, spacing_s=3600, low=p.pm25_ratio[0], high=p.pm25_ratio[1], **span)
        self.tsp_ratio = Knots.uniform(rng, spacing_s=3600, low=p.tsp_ratio[0], high=p.tsp_ratio[1], **span)
        self.noise_drift = Knots.normal(rng, spacing_s=1800, sigma=p.noise_drift_sigma, **span)
        self.temp_drift = Knots.normal(rng, spacing_s=7200, sigma=1.0, **span)
        self.hum_drift = Knots.normal(rng, spacing_s=7200, sigma=6.0, **span)
        self.pressure = Knots.uniform(rng, spacing_s=4 * 3600, low=p.pressure_kpa[0], high=p.pressure_kpa[1], **span)
        self.wind = Knots.uniform(rng, spacing_s=900, low=0.3, high=1.7, **span)
        self.wind_dir = Knots.normal(rng, spacing_s=600, sigma=25.0, walk=True, **span)
        self.wind_dir_base = uniform(rng, (0, 360))
        self._plan_bursts(rng, start_ms, end_ms)
        self._plan_exits(rng, start_ms, end_ms)

    def _hours(self, t_ms: np.ndarray) -> np.ndarray:
        return ((t_ms + self.offset_ms) % 86_400_000) / _H

    def _plan_bursts(self, rng: np.random.Generator, start_ms: int, end_ms: int) -> None:
        p = self.p
        n = rng.poisson(p.burst_rate_per_h * (end_ms - start_ms) / _H)
        starts = np.sort(rng.integers(start_ms, end_ms, n, endpoint=False))
        hours = self._hours(starts)
        starts = starts[(hours >= 7.5) & (hours < 17)]  # earthwork happens in work hours
        k = starts.size
        self.burst_start = starts
        self.burst_amp = rng.uniform(*p.burst_amplitude, k)
        self.burst_rise = rng.uniform(*p.burst_rise_min, k) * _MIN
        self.burst_delay = rng.uniform(*p.spray_delay_min, k) * _MIN
        self.burst_tau = rng.uniform(*p.spray_decay_tau_min, k) * _MIN
        self.burst_run = rng.uniform(*p.spray_run_min, k) * _MIN

    def _plan_exits(self, rng: np.random.Generator, start_ms: int, end_ms: int) -> None:
        p = self.p
        top = max(p.exits_per_h_work, p.exits_per_h_night, p.exits_per_h_other)
        n = rng.poisson(top * (end_ms - start_ms) / _H)
        times = rng.integers(start_ms // 1000, end_ms // 1000, n, endpoint=False) * 1000
        keep = rng.random(n) < _exit_rate(self._hours(times), p) / top  # thinning
        times = times[keep]
        washed = np.ones(times.size, bool)
        covered = np.ones(times.size, bool)
        wash_s = rng.uniform(*p.wash_seconds, times.size)
        for ep in self.episodes:
            if ep.type != "night_transport":
                continue
            # Extra night exits in the window, most of them unwashed and uncovered.
            per_h = float(ep.params.get("exits_per_h", 10))
            m = max(1, rng.poisson(per_h * (ep.end_ms - ep.begin_ms) / _H))
            extra = rng.integers(ep.begin_ms // 1000, ep.end_ms // 1000, m, endpoint=False) * 1000
            ex_washed = rng.random(m) < float(ep.params.get("washed_fraction", 0.0))
            ex_covered = rng.random(m) < float(ep.params.get("covered_fraction", 0.0))
            ex_wash_s = np.where(ex_washed, rng.uniform(*p.wash_seconds, m), rng.uniform(0, 30, m))
            times = np.concatenate([times, extra])
            washed = np.concatenate([washed, ex_washed])
            covered = np.concatenate([covered, ex_covered])
            wash_s = np.concatenate([wash_s, ex_wash_s])
        order = np.argsort(times, kind="stable")
        self.exit_ms = times[order]
        self.exit_washed = washed[order]
        self.exit_covered = covered[order]
        self.exit_wash_s = np.round(wash_s[order]).astype(int)
        self.exit_plate = [
            p.plate_prefix + "".join(rng.choice(_PLATE_CHARS, 5)) for _ in range(self.exit_ms.size)
        ]
        self.exit_puff = rng.uniform(*p.truck_pm10, self.exit_ms.size)
        self.exit_noise_max = rng.uniform(*p.truck_noise_max, self.exit_ms.size)

    def events(self, begin_ms: int, end_ms: int) -> list[tuple[int, str, dict[str, Any]]]:
        """Vehicle exits in [begin, end): (ts_ms, type, attributes)."""
        lo, hi = np.searchsorted(self.exit_ms, [begin_ms, end_ms])
        return [
            (int(self.exit_ms[i]), "vehicle_exit", {
                "plate": self.exit_plate[i], "washed": bool(self.exit_washed[i]),
                "wash_seconds": int(self.exit_wash_s[i]), "covered": bool(self.exit_covered[i]),
            })
            for i in range(lo, hi)
        ]

    def _bursts(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Earthwork PM10 and the spray state: a burst rises until the spray starts, then
        decays exponentially while the spray runs."""
        extra = np.zeros(t.size)
        spray = np.zeros(t.size, bool)
        near = (self.burst_start <= t[-1]) & (self.burst_start + 2 * _H > t[0])
        for s, a, r, d, tau, run in zip(self.burst_start[near], self.burst_amp[near], self.burst_rise[near],
                                        self.burst_delay[near], self.burst_tau[near], self.burst_run[near]):
            x = t - s
            peak = a * min(1.0, d / r)
            rising = (x >= 0) & (x < d)
            extra += np.where(rising, a * np.minimum(x / r, 1.0), 0.0)
            extra += np.where(x >= d, peak * np.exp(-np.maximum(x - d, 0) / tau), 0.0)
            spray |= (x >= d) & (x < d + run)
        return extra, spray

    def _trucks(self, t: np.ndarray, interval_ms: float) -> tuple[np.ndarray, np.ndarray]:
        """PM10 puffs after each exit and the Lmax of the truck passing in that interval."""
        puff = np.zeros(t.size)
        lmax = np.zeros(t.size)
        lo, hi = np.searchsorted(self.exit_ms, [t[0] - 20 * _MIN, t[-1] + 1])
        for i in range(lo, hi):
            x = t - self.exit_ms[i]
            puff += np.where(x >= 0, self.exit_puff[i] * np.exp(-np.maximum(x, 0) / (1.5 * _MIN)), 0.0)
            lmax = np.where((x >= 0) & (x < interval_ms), np.maximum(lmax, self.exit_noise_max[i]), lmax)
        return puff, lmax

    def render(self, t_ms: np.ndarray, rng: np.random.Generator, interval_ms: float) -> dict[str, np.ndarray]:
        p, t, n = self.p, t_ms.astype(np.float64), t_ms.size
        h = self._hours(t_ms)
        night = is_night(h)

        temperature = (p.temperature_mean + p.temperature_amplitude * np.cos(2 * math.pi * (h - 15) / 24)
                       + self.temp_drift.at(t) + rng.normal(0, 0.1, n))
        humidity = np.clip(p.humidity_mean - 2.0 * (temperature - p.temperature_mean) + self.hum_drift.at(t)
                           + rng.normal(0, 0.5, n), 10, 99)

        burst, spray = self._bursts(t)
        puff, truck_lmax = self._trucks(t, interval_ms)
        pm10 = diurnal(h, p.pm10_profile) * self.scale * np.exp(self.drift.at(t)) + burst + puff
        pm10 += rng.normal(0, p.pm10_noise, n)
        pm10 *= 1 + 0.03 * np.maximum(humidity - p.humid_overread_above, 0)  # optical over-read
        pm10 = soft_cap(pm10, p.pm10_soft_cap, 25.0)

        noise = diurnal(h, p.noise_profile) + self.noise_drift.at(t) + rng.normal(0, p.noise_white, n)
        noise += np.where(truck_lmax > 0, 1.0, 0.0)
        noise = soft_cap(noise, np.where(night, p.noise_cap_night, p.noise_cap_day), 3.0)
        noise_max = noise + rng.uniform(*p.noise_max_over, n)
        noise_max = np.maximum(noise_max, truck_lmax)
        noise_max = np.where(night, soft_cap(noise_max, p.noise_max_cap_night, 3.0), np.minimum(noise_max, 95))

        for ep in self.episodes:
            mask = window_mask(t_ms, ep.begin_ms, ep.end_ms)
            if ep.type == "dust_episode":
                pm10, spray = self._dust_episode(ep, t, pm10, spray, rng)
            elif ep.type == "noise_night" and mask.any():
                level = float(ep.params.get("level", 62))
                lmax = float(ep.params.get("lmax", 78))
                noise = np.where(mask, level + rng.normal(0, 1.5, n), noise)
                noise_max = np.where(mask, np.maximum(noise + 3, lmax + rng.normal(0, 2.0, n)), noise_max)

        pm10 = np.maximum(pm10, 3.0)
        wind_speed = np.maximum(0, p.wind_speed_mean * self.wind.at(t) * (1 + 0.4 * np.sin(2 * math.pi * (h - 9) / 24))
                                + rng.normal(0, 0.3, n))
        return {
            "pm25": pm10 * self.pm25_ratio.at(t),
            "pm10": pm10,
            "tsp": pm10 * self.tsp_ratio.at(t),
            "noise": noise,
            "noise_max": noise_max,
            "wind_speed": wind_speed,
            "wind_dir": (self.wind_dir_base + self.wind_dir.at(t) + rng.normal(0, 8, n)) % 360,
            "temperature": temperature,
            "humidity": humidity,
            "pressure": self.pressure.at(t) + rng.normal(0, 0.02, n),
            "spray_on": spray,
            "cover_ratio": np.full(n, 100.0),
            "hoarding_intact": np.ones(n, bool),
            "hardened_ratio": np.full(n, 100.0),
        }

    def _dust_episode(self, ep: ActiveEpisode, t: np.ndarray, pm10: np.ndarray, spray: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """PM10 held above the set value with the spray off for the whole window (it rises
        in the 3 minutes before), then the spray comes on and cuts it within minutes."""
        level = float(ep.params.get("level", 230))
        floor = float(ep.params.get("floor", 170))
        ramp, tau, run = 3 * _MIN, float(ep.params.get("decay_tau_min", 2.5)) * _MIN, 12 * _MIN
        x = t - ep.begin_ms
        end = ep.end_ms - ep.begin_ms
        held = np.maximum(level + rng.normal(0, 12, t.size), floor)
        rising = (x >= -ramp) & (x < 0)
        during = (x >= 0) & (x < end)
        after = (x >= end) & (x < end + run)
        pm10 = np.where(rising, pm10 + (level - pm10) * (x + ramp) / ramp, pm10)
        pm10 = np.where(during, held, pm10)
        pm10 = np.where(after, pm10 + (level - pm10) * np.exp(-np.maximum(x - end, 0) / tau), pm10)
        spray = np.where(during | rising, False, np.where(after, True, spray))
        return pm10, spray
