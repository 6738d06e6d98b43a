"""Micro benchmark of the alert engine's per-reading CPU cost: `python -m devtools.perf_alerts`.

The engine is built the way the service builds it (`build_alerting` with the shipped rule
packs, the ingest registry and a history sink; no MQTT notifier, whose network thread
would share the GIL with the measurement). The readings are the simulators' `normal-day`
scenario decoded by the ingest `Decoder`, so values, field order and types are exactly
what the engine sees in production: 200 sites = 140 dust monitors every 10 s, 40 heating
substations and 20 water plants every 60 s, event time advancing.

Each run starts from an empty state file, feeds `--warmup` readings (windows fill,
untimed), then times `engine.process` over `--readings` more in batches of `--batch`
(a group commit at ~25k readings/s and a 20 ms commit interval is ~500 readings).
Prints CPU µs per reading (thread time, so other load on the machine matters little)
for each run and the median.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citywatch.model import Event, RawMessage, Reading
from citywatch.registry import Device, Registry
from citywatch.settings import Settings


@dataclass
class _Batch:
    """The shape `AlertEngine.process` reads (ingest's validated-stream batch)."""

    readings: list[Reading]
    events: list[Event]


class _NullSink:
    """Stands in for the ingest committer (only used when an alert is delivered)."""

    def submit(self, *a: Any, **kw: Any) -> None:  # pragma: no cover - normal-day fires nothing
        pass


def fleet_stream(scenario: str, sites: int, count: int, seed: int, start: str | None) -> tuple[list[Reading], list[Event], Registry]:
    """`count` readings (plus the events among them) from the scenario, decoded by ingest."""
    from ingest.decode import Decoder
    from ingest.types import Accepted
    from simulators.stream import generate_run, plan_run

    run = plan_run(scenario, sites=sites, seed=seed, start=start)
    registry = Registry({d.id: Device(d.id, d.site, d.kind, expected_interval_s=float(
        run.scenario.intervals_s.get(d.kind, 60))) for d in run.fleet}, {})
    decoder = Decoder(registry=registry, clock=lambda: run.end_ms)
    readings: list[Reading] = []
    events: list[Event] = []
    for m in generate_run(run):
        if m.fault is not None:
            continue
        out = decoder.decode(RawMessage(m.topic, m.payload, m.sim_ts_ms))
        if not isinstance(out, Accepted):
            raise SystemExit(f"the scenario produced a rejected message: {out}")
        readings.extend(out.readings)
        events.extend(out.events)
        if len(readings) >= count:
            break
    return readings[:count], events, registry


def _batches(readings: list[Reading], events: list[Event], size: int) -> list[_Batch]:
    out = []
    ev = sorted(events, key=lambda e: e.ts_ms)
    j = 0
    for i in range(0, len(readings), size):
        chunk = readings[i:i + size]
        end = chunk[-1].ts_ms
        k = j
        while k < len(ev) and ev[k].ts_ms <= end:
            k += 1
        out.append(_Batch(chunk, ev[j:k]))
        j = k
    return out


def one_run(warm: list[_Batch], timed: list[_Batch], registry: Registry, *,
            guards: bool = True) -> tuple[float, dict[str, int]]:
    """CPU seconds spent in `engine.process` over `timed`, on a fresh engine warmed with `warm`."""
    from alerts.build import build_alerting

    with tempfile.TemporaryDirectory(prefix="cw-alerts-perf-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        engine, tasks = build_alerting(settings, registry=registry, sink=_NullSink(), mqtt=False)
        for coro in tasks:  # the service would run these (timer, delivery); not measured here
            coro.close()
        engine._use_guards = guards
        try:
            for b in warm:
                engine.process(b)
            gc.collect()
            elapsed = 0.0
            # CPU time of this thread, not wall time: the figure should not depend on what
            # else the machine runs (the service shares it with the broker and InfluxDB).
            clock = time.thread_time
            for b in timed:
                t0 = clock()
                engine.process(b)
                elapsed += clock() - t0
            return elapsed, dict(engine.stats)
        finally:
            engine.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.perf_alerts", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="normal-day")
    p.add_argument("--sites", type=int, default=200)
    p.add_argument("--readings", type=int, default=100_000, help="timed readings per run")
    p.add_argument("--warmup", type=int, default=30_000, help="untimed readings first (windows fill)")
    p.add_argument("--batch", type=int, default=500, help="readings per engine.process call")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", default="2026-11-27T05:00:00",
                   help="local start; the default spans the 06:00 day/night switch of the noise rules")
    p.add_argument("--no-guards", action="store_true",
                   help="evaluate every rule (the worst case, when every reading is near a threshold)")
    p.add_argument("--profile", type=Path, default=None, help="write a cProfile of one extra run here")
    p.add_argument("--json", action="store_true", help="one JSON line instead of text")
    ns = p.parse_args(argv)

    t = time.perf_counter()
    readings, events, registry = fleet_stream(ns.scenario, ns.sites, ns.warmup + ns.readings, ns.seed, ns.start)
    batches = _batches(readings, events, ns.batch)
    n_warm = ns.warmup // ns.batch
    warm, timed = batches[:n_warm], batches[n_warm:]
    n_timed = sum(len(b.readings) for b in timed)
    if not ns.json:
        print(f"{len(readings)} readings, {len(events)} events from {ns.scenario} ({ns.sites} sites) "
              f"in {time.perf_counter() - t:.1f} s; timing {n_timed} readings x {ns.runs} runs", file=sys.stderr)
    per: list[float] = []
    stats: dict[str, int] = {}
    for i in range(ns.runs):
        elapsed, stats = one_run(warm, timed, registry, guards=not ns.no_guards)
        per.append(elapsed / n_timed * 1e6)
        if not ns.json:
            print(f"run {i + 1}: {per[-1]:.2f} µs/reading", file=sys.stderr)
    if ns.profile is not None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        one_run(warm, timed, registry, guards=not ns.no_guards)
        prof.disable()
        prof.dump_stats(ns.profile)
    med = statistics.median(per)
    if ns.json:
        print(json.dumps({"us_per_reading": round(med, 3), "runs": [round(x, 3) for x in per],
                          "readings": n_timed, "stats": stats}))
    else:
        print(f"median {med:.2f} µs/reading ({1e6 / med:,.0f} readings/s on one core); engine stats {stats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
