"""Helpers for alert tests (imported by the test modules; unique name on sys.path)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from alerts import AlertEngine, EngineConfig
from alerts.notify import Backoff
from alerts.testing import FakeClock, RecordingNotifier
from citywatch.model import Event, Reading
from citywatch.registry import Device, Registry

TZ = ZoneInfo("Asia/Shanghai")
MIN = 60_000


def local_ms(text: str) -> int:
    """'2026-11-27 08:00' (Asia/Shanghai) → epoch ms."""
    return int(datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp() * 1000)


T0 = local_ms("2026-11-27 08:00")  # a weekday morning, daytime for GB 12523

KIND_OF = {"D": "dust", "H": "heating", "W": "water"}


def series(device: str, start_ms: int, minutes: float, values: dict, *, step_s: float = 60,
           jitter: bool = True, site: str = "S1") -> list[Reading]:
    """Readings every step_s for `minutes`; a value may be a constant or f(i). A tiny
    deterministic jitter keeps numeric series from looking stuck."""
    kind = KIND_OF[device[0]]
    out = []
    n = int(minutes * 60 / step_s)
    for i in range(n):
        vals = {}
        for k, v in values.items():
            x = v(i) if callable(v) else v
            if jitter and isinstance(x, float):
                x = x + (0.01 if i % 2 else 0.0)
            vals[k] = x
        out.append(Reading(kind, site, device, start_ms + int(i * step_s * 1000), vals))
    return out


def exit_event(device: str, ts_ms: int, *, washed=True, wash_seconds=90.0, covered=True, site="S1") -> Event:
    return Event("dust", site, device, ts_ms, "vehicle_exit",
                 {"plate": "晋E12345", "washed": washed, "wash_seconds": wash_seconds, "covered": covered})


class Harness:
    """An engine in event-time mode with a recording notifier; `feed` then `deliver`."""

    def __init__(self, path: Path, *, registry: Registry | None = None, clock: FakeClock | None = None,
                 time_mode: str = "event", rules=None, name: str = "recorder", **kw):
        self.path = path
        self.clock = clock or FakeClock(T0 / 1000)
        self.rec = RecordingNotifier(name=name)
        config = EngineConfig(state_path=path, time_mode=time_mode, tz="Asia/Shanghai",
                              backoff=Backoff(initial_s=0.01, max_s=0.05), **kw)
        self.engine = AlertEngine(config, rules=rules, registry=registry, notifiers=[self.rec], clock=self.clock)

    def feed(self, readings: Iterable[Reading] = (), events: Iterable[Event] = ()) -> None:
        items = sorted([*readings, *events], key=lambda x: x.ts_ms)
        for x in items:  # one at a time, like a live stream
            if isinstance(x, Reading):
                self.engine.process_readings([x])
            else:
                self.engine.process_readings([], [x])

    def deliver(self) -> list[tuple[str, str, str]]:
        assert asyncio.run(self.engine.drain(5.0))
        return self.rec.events()

    def firing(self) -> dict[str, dict]:
        return {a["rule"]: a for a in self.engine.list_alerts(state="firing")}


def registry(*devices: Device) -> Registry:
    return Registry({d.id: d for d in devices}, {})
