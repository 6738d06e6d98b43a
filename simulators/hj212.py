"""`citywatch simulate --protocol hj212`: a fleet of HJ 212 dust monitors over TCP.

Each monitor opens its own connection to the gateway and sends real-time (CN=2011)
packets with Flag=5, one after another, each waiting for its CN=9014 answer, which the
gateway sends only once the reading is durable. `--dialect` picks what the fleet speaks
(`ingest.hj212.testing.DIALECTS`: 2017, 2025, 2005 without QN/Flag and so without
answers, tianjin, no-crlf, len+6, split). The monitors' MN and PW come from the
device registry (`CW_DEVICES_FILE`), or, without one, from a generated fleet whose
registry can be written with `--write-registry` for the service to load.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from citywatch.registry import Registry


def registry_toml(registry: Registry) -> str:
    """The `[[device]]` tables of `registry` (for the service's CW_DEVICES_FILE)."""
    out = []
    for d in registry.devices.values():
        out.append(f'[[device]]\nid = "{d.id}"\nsite = "{d.site}"\nkind = "{d.kind}"\n'
                   f'expected_interval_s = {d.expected_interval_s}\nhj212_mn = "{d.hj212_mn}"\n'
                   f'hj212_pw = "{d.hj212_pw}"\nhj212_crc = "{d.hj212_crc}"\n')
    return "\n".join(out)


def run_hj212(args: argparse.Namespace, *, devices_file: Path | None) -> int:
    from ingest.hj212.testing import DIALECTS, dialect_answered, fleet_registry, run_fleet

    dialect = getattr(args, "dialect", "2017")
    if dialect not in DIALECTS:
        print(f"simulate: --dialect must be one of {', '.join(DIALECTS)}", flush=True)
        return 2
    host, _, port = (args.hj212 or "127.0.0.1:9212").rpartition(":")
    if not port.isdigit():
        print("simulate: --hj212 must be host:port", flush=True)
        return 2
    if devices_file is not None:
        registry = Registry.load(devices_file)
        monitors = [d for d in registry.devices.values() if d.hj212_mn]
        count = min(args.sites, len(monitors))
        if count == 0:
            print(f"simulate: no device in {devices_file} has an hj212_mn")
            return 2
    else:
        registry = fleet_registry(args.sites)
        count = args.sites
    if args.write_registry:
        Path(args.write_registry).write_text(registry_toml(registry), encoding="utf-8")
        print(f"wrote the fleet's registry to {args.write_registry} (use it as CW_DEVICES_FILE)")
        if args.packets == 0:
            return 0
    start = None
    if getattr(args, "start", None):
        from datetime import datetime
        from zoneinfo import ZoneInfo

        start = datetime.fromisoformat(args.start)
        if start.tzinfo is None:  # local time, like the MQTT scenarios' --start
            start = start.replace(tzinfo=ZoneInfo("Asia/Shanghai"))
    result = asyncio.run(run_fleet(host, int(port), monitors=count, packets_each=args.packets, registry=registry,
                                   interval_s=30.0, dialect=dialect, start=start))
    rate = result.sent / result.elapsed_s if result.elapsed_s else 0.0
    answered = f"{result.answered:,} answered (CN=9014)" if dialect_answered(dialect) else "no answers (none asked for)"
    print(f"hj212 ({dialect}): {count:,} monitors, sent {result.packets:,} packets, {answered} in "
          f"{result.elapsed_s:,.1f} s ({result.sent:,} readings, {rate:,.0f} readings/s)")
    for err in result.errors[:10]:
        print(f"  error: {err}")
    complete = result.answered == result.sent or not dialect_answered(dialect)
    return 0 if complete and not result.errors else 1
