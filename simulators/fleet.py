"""The fleet: N sites, one device each, kinds spread by the scenario's mix.

Site ids are `S0001…`, device ids `D00001…`, both in fleet order. Kinds are interleaved
(largest deficit first), so a prefix of the fleet has the same mix as the whole and the
kind with the largest share comes first; the same fleet size always gives the same fleet.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from simulators.profiles import DeviceProfile, load_profile
from simulators.scenario import Scenario, Target


@dataclass(frozen=True, slots=True)
class Device:
    index: int  # position in the fleet; with the seed it fixes the device's random streams
    id: str
    site: str
    kind: str
    interval_s: float
    profile: DeviceProfile


def allocate_kinds(mix: dict[str, float], sites: int) -> list[str]:
    total = sum(mix.values())
    shares = {k: w / total for k, w in mix.items() if w > 0}
    counts = dict.fromkeys(shares, 0)
    kinds: list[str] = []
    for i in range(sites):
        # Largest deficit first; ties go to the kind listed first in the mix.
        kind = max(shares, key=lambda k: shares[k] * (i + 1) - counts[k])
        counts[kind] += 1
        kinds.append(kind)
    return kinds


def build_fleet(scenario: Scenario, *, sites: int) -> list[Device]:
    fleet = []
    for i, kind in enumerate(allocate_kinds(scenario.fleet.mix, sites)):
        profile = load_profile(kind)
        interval = scenario.intervals_s.get(kind, profile.interval_s)
        fleet.append(Device(i, f"D{i + 1:05d}", f"S{i + 1:04d}", kind, float(interval), profile))
    return fleet


def select(target: Target, fleet: list[Device]) -> set[int]:
    """Device indices an episode or fault applies to."""
    chosen = [d for d in fleet if (target.kind is None or d.kind == target.kind)
              and (target.sites is None or d.site in target.sites)]
    if target.count is not None:
        chosen = chosen[: target.count]
    elif target.fraction is not None:
        chosen = chosen[: max(1, round(target.fraction * len(chosen)))]
    return {d.index for d in chosen}


def rng_for(seed: int, device: int, stream: str) -> np.random.Generator:
    """An independent random stream per (seed, device, purpose): a device's numbers do not
    depend on fleet size, on which process generates it, or on the other streams."""
    return np.random.default_rng([seed, device, zlib.crc32(stream.encode())])
