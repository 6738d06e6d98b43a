"""The pure generator: scenario + fleet size + seed → messages in simulated-time order.

Each device renders its readings in fixed blocks of `BLOCK` samples from its own random
streams, so a device's messages do not depend on the fleet size, on the process that
generates it, or on how fast they are consumed. Device streams are merged by send time.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from citywatch.schema import kinds as schema_kinds
from citywatch.topics import event_topic, telemetry_topic
from simulators.encode import Encoder
from simulators.errors import ScenarioError
from simulators.faults import DEFAULT_FIELD, PAYLOAD_FAULTS, Block, DeviceFault, FaultState, apply_faults
from simulators.fleet import Device, build_fleet, rng_for, select
from simulators.message import SimMessage
from simulators.models import MODELS, STREAM_EPISODES, ActiveEpisode
from simulators.scenario import Scenario, load_scenario
from simulators.timeutil import parse_local_start, to_ms

BLOCK = 240  # samples per render; fixed because it shapes the random streams


@dataclass(frozen=True, slots=True)
class Run:
    """A scenario resolved for one fleet, seed and time span."""

    scenario: Scenario
    fleet: list[Device]
    seed: int
    start: datetime
    start_ms: int
    end_ms: int
    offset_ms: int  # local time minus UTC
    episodes: dict[int, list[ActiveEpisode]]  # device index -> its episodes
    faults: dict[int, list[DeviceFault]]

    def device(self, device_id: str) -> Device:
        return next(d for d in self.fleet if d.id == device_id)


def plan_run(scenario: str | Path | Scenario, *, sites: int, seed: int, duration_s: float | None = None,
             start: datetime | str | None = None) -> Run:
    """Resolve the fleet and every episode and fault window; raises ScenarioError when a
    scenario names an episode a kind cannot show or a field a kind does not have."""
    sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    if sites < 1:
        raise ScenarioError("sites must be at least 1")
    begin = parse_local_start(start, sc.tz) if start is not None else sc.start_dt()
    start_ms = to_ms(begin)
    end_ms = start_ms + int((sc.duration_s() if duration_s is None else duration_s) * 1000)
    offset = begin.utcoffset()
    offset_ms = int(offset.total_seconds() * 1000) if offset else 0
    fleet = build_fleet(sc, sites=sites)
    episodes: dict[int, list[ActiveEpisode]] = {d.index: [] for d in fleet}
    for ep in sc.episodes:
        b, e = sc.window_ms(ep, start=begin, end_ms=end_ms)
        for idx in sorted(select(ep.target, fleet)):
            kind = fleet[idx].kind
            if ep.type not in STREAM_EPISODES and ep.type not in MODELS[kind].EPISODE_TYPES:
                raise ScenarioError(f"scenario {sc.name}: episode {ep.type!r} does not apply to kind {kind!r}")
            episodes[idx].append(ActiveEpisode(ep.type, b, e, dict(ep.params)))
    faults: dict[int, list[DeviceFault]] = {d.index: [] for d in fleet}
    fields = {k: set(s.fields) for k, s in schema_kinds().items()}
    for f in sc.faults:
        b, e = sc.window_ms(f, start=begin, end_ms=end_ms)
        for idx in sorted(select(f.target, fleet)):
            kind = fleet[idx].kind
            name = f.field or DEFAULT_FIELD[kind]
            if name not in fields[kind]:
                raise ScenarioError(f"scenario {sc.name}: fault {f.type!r} names field {name!r} unknown to {kind!r}")
            faults[idx].append(DeviceFault(f, b, e, name))
    return Run(sc, fleet, seed, begin, start_ms, end_ms, offset_ms, episodes, faults)


def sample_times(device: Device, run: Run) -> np.ndarray:
    """Nominal reading times: every interval from a per-device phase (whole seconds), so a
    fleet does not report in lock-step."""
    interval_ms = int(device.interval_s * 1000)
    phase = int(rng_for(run.seed, device.index, "phase").integers(0, max(1, interval_ms // 1000))) * 1000
    return np.arange(run.start_ms + phase, run.end_ms, interval_ms, dtype=np.int64)


def expected_count(run: Run, *, part: tuple[int, int] | None = None) -> int:
    """Roughly how many telemetry messages a run sends (for progress bars)."""
    total = 0
    for d in run.fleet:
        if part is None or d.index % part[1] == part[0]:
            total += math.ceil((run.end_ms - run.start_ms) / (d.interval_s * 1000))
    return total


def device_stream(device: Device, run: Run) -> Iterator[tuple[int, int, int, SimMessage]]:
    """(send_ms, device index, n, message) for one device, in send order."""
    model = MODELS[device.kind](
        params=device.profile.params, rng=rng_for(run.seed, device.index, "plan"),
        start_ms=run.start_ms, end_ms=run.end_ms, offset_ms=run.offset_ms, episodes=run.episodes[device.index],
    )
    noise_rng = rng_for(run.seed, device.index, "noise")
    fault_rng = rng_for(run.seed, device.index, "faults")
    encoder = Encoder.for_profile(device.profile, offset_ms=run.offset_ms)
    decimals = device.profile.decimals
    faults = run.faults[device.index]
    fault_field = {f.spec.type: f.field for f in reversed(faults)}
    silences = [(e.begin_ms, e.end_ms) for e in run.episodes[device.index] if e.type == "silence"]
    overrides = [e for e in run.episodes[device.index] if e.type == "override"]
    t_topic = telemetry_topic(device.kind, device.site, device.id)
    e_topic = event_topic(device.kind, device.site, device.id)
    interval_ms = device.interval_s * 1000
    times = sample_times(device, run)
    state = FaultState()
    pending: list[tuple[int, int, int, SimMessage]] = []
    n = 0

    def message(send_ms: int, topic: str, payload: bytes, fault: str | None) -> tuple[int, int, int, SimMessage]:
        nonlocal n
        n += 1
        return (send_ms, device.index, n,
                SimMessage(send_ms, topic, payload, fault, device.id, device.kind, device.site))

    for lo in range(0, times.size, BLOCK):
        t = times[lo: lo + BLOCK]
        block_end = int(times[lo + BLOCK]) if lo + BLOCK < times.size else run.end_ms
        values = model.render(t, noise_rng, interval_ms)
        for ep in overrides:
            mask = (t >= ep.begin_ms) & (t < ep.end_ms)
            for name, value in ep.params.get("set", {}).items():
                values[name] = np.where(mask, value, values[name])
        block = Block(t, np.arange(lo, lo + t.size, dtype=np.int64), values)
        for b, e in silences:
            block.keep &= ~((t >= b) & (t < e))
        apply_faults(block, faults, fault_rng, state)

        ts_text = encoder.ts_texts(block.ts_ms)
        payloads = encoder.telemetry(ts_text, block.seq, block.values)
        for i in np.flatnonzero(block.keep).tolist():
            fault = block.fault[i]
            payload = payloads[i]
            if fault in PAYLOAD_FAULTS:
                row = {k: (bool(v[i]) if k in encoder.bools else round(float(v[i]), decimals.get(k, 2)))
                       for k, v in block.values.items()}
                payload = encoder.malformed(fault, ts_text=ts_text[i], seq=int(block.seq[i]), values=row,
                                            field=fault_field[fault], rng=fault_rng)
            heapq.heappush(pending, message(int(block.send_ms[i]), t_topic, payload, fault))
            if block.dup_ms[i] >= 0:
                heapq.heappush(pending, message(int(block.dup_ms[i]), t_topic, payload, "duplicate"))
        block_begin = run.start_ms if lo == 0 else int(t[0])
        for ts, type_, attrs in model.events(block_begin, block_end):
            if not any(b <= ts < e for b, e in silences):
                heapq.heappush(pending, message(ts, e_topic, encoder.event(ts, type_, attrs), None))
        # Nothing later can be sent before the next block's first reading.
        while pending and pending[0][0] < block_end:
            yield heapq.heappop(pending)
    while pending:
        yield heapq.heappop(pending)


def generate(scenario: str | Path | Scenario, *, sites: int, seed: int, duration_s: float | None = None,
             start: datetime | str | None = None, part: tuple[int, int] | None = None) -> Iterator[SimMessage]:
    """Every message of a scenario run, in simulated send-time order.

    `part=(k, p)` keeps only devices whose fleet index is k modulo p: the p parts together
    are exactly the whole run, which is how the load generator splits work over processes.
    Same arguments, same byte-identical stream.
    """
    run = plan_run(scenario, sites=sites, seed=seed, duration_s=duration_s, start=start)
    yield from generate_run(run, part=part)


def generate_run(run: Run, *, part: tuple[int, int] | None = None) -> Iterator[SimMessage]:
    streams = [device_stream(d, run) for d in run.fleet if part is None or d.index % part[1] == part[0]]
    for item in heapq.merge(*streams):
        yield item[3]
