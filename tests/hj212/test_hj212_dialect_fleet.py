"""`run_fleet(dialect=...)` (what `citywatch simulate --protocol hj212 --dialect` and the
bench drive) against a live gateway: every dialect's readings arrive whole, answered when
the dialect asks, and nothing is dead-lettered."""

from __future__ import annotations

import asyncio

import pytest

from ingest.hj212.testing import DIALECTS, MemorySink, dialect_answered, fleet_registry, run_fleet
from tests.hj212.conftest import running

MONITORS, PACKETS = 20, 4


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_a_fleet_of_each_dialect_is_stored_whole(dialect: str) -> None:
    registry = fleet_registry(MONITORS)

    async def main() -> None:
        async with running(registry, sink) as gw:
            result = await run_fleet("127.0.0.1", gw.bound_port, monitors=MONITORS, packets_each=PACKETS,
                                     registry=registry, dialect=dialect)
            assert result.errors == [] and result.sent == MONITORS * PACKETS
            assert result.answered == (result.sent if dialect_answered(dialect) else 0)
            assert result.packets == result.sent * (2 if dialect == "split" else 1)
            for _ in range(100):  # unanswered dialects: wait for the sink
                if len([r for a in sink.accepted for r in a.readings]) >= result.sent:
                    break
                await asyncio.sleep(0.05)

    with MemorySink(delay_s=0.002) as sink:
        asyncio.run(asyncio.wait_for(main(), 60))
    rejected = [r for r in sink.rejected if not r.reasons[0].startswith("split_part")]
    assert rejected == []
    readings = [r for a in sink.accepted for r in a.readings]
    assert len(readings) == MONITORS * PACKETS == len({(r.device, r.ts_ms) for r in readings})
    # Every dialect carries PM10, PM2.5 and noise; the Tianjin names reach the same fields.
    assert all({"pm10", "pm25", "noise"} <= set(r.values) and r.quality["pm10"] == "N" for r in readings)
    assert all(not a.partial for a in sink.accepted)
