"""Memory the alert engine holds per device: `python -m devtools.perf_alerts_memory [--sites N]`.

Feeds the first reading of each device of the simulators' `normal-day` fleet (decoded by
ingest, as `devtools.perf_alerts` does) to a fresh engine built like the service builds it, and
measures with tracemalloc what the engine allocated and kept, per device, with the
allocation sites that hold the most. This is the cost of a device the engine has just
met; the windows then fill up to their bounded capacity.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import tracemalloc
from pathlib import Path

from devtools.perf_alerts import _NullSink, _batches, fleet_stream
from citywatch.settings import Settings


def measure(sites: int, seed: int = 7, top: int = 10) -> dict:
    """Bytes per device kept by the engine after one reading from each of the fleet's devices."""
    from alerts.build import build_alerting

    readings, events, registry = fleet_stream("normal-day", sites, sites, seed, "2026-11-27T05:00:00")
    devices = len({r.device for r in readings})
    batches = _batches(readings, events, 500)
    with tempfile.TemporaryDirectory(prefix="cw-alerts-mem-") as tmp:
        engine, tasks = build_alerting(Settings(data_dir=Path(tmp)), registry=registry, sink=_NullSink(), mqtt=False)
        for coro in tasks:  # the service would run these; not part of the measurement
            coro.close()
        try:
            gc.collect()
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            for b in batches:
                engine.process(b)
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
        finally:
            engine.close()
    diff = after.compare_to(before, "lineno")
    total = sum(d.size_diff for d in diff)
    return {"devices": devices, "readings": len(readings), "bytes_per_device": round(total / devices),
            "top": [{"site": str(d.traceback[0]), "bytes_per_device": round(d.size_diff / devices)}
                    for d in diff[:top]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.perf_alerts_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--sites", type=int, default=20_000, help="normal-day sites (about 0.77 devices each)")
    p.add_argument("--json", action="store_true", help="one JSON line instead of text")
    ns = p.parse_args(argv)
    out = measure(ns.sites)
    if ns.json:
        print(json.dumps(out))
    else:
        print(f"{out['bytes_per_device']:,} bytes per device ({out['devices']:,} devices, one reading each)")
        for t in out["top"]:
            print(f"{t['bytes_per_device']:8,}  {t['site']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
