"""The alert engine's settings, one typed value (`EngineConfig`), built once and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alerts.notify import Backoff


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """What the engine is told; its collaborators (rules, registry, notifiers, sink, clock)
    are passed to `AlertEngine` beside it."""

    state_path: Path | str  # the SQLite file of durable alert state (alerts/store.py)
    rules_dir: Path | None = None  # CW_RULES_DIR: used when no rules are passed
    tz: str = "Asia/Shanghai"  # CW_TZ: local days, schedules, times in payloads
    # "wall": the timer uses the injected clock (service); "event": the newest event time (replays, tests)
    time_mode: Literal["wall", "event"] = "wall"
    late_tolerance_s: float = 300.0  # a reading this much older than its device's watermark is dropped
    repeat_interval_s: float = 4 * 3600.0  # re-send a firing, unacknowledged alert (a rule may override)
    snapshot_interval_s: float = 5.0  # persist watermarks and windows
    tick_interval_s: float = 1.0  # the timer
    backoff: Backoff = field(default_factory=Backoff)  # the delivery stage's retry backoff
    max_samples_per_series: int = 8192
    default_interval_s: float = 10.0  # a device's expected interval when the registry has none
    retention_days: float = 90.0  # delivered outbox rows, resolved alerts, ended silences

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "EngineConfig":
        """The service's configuration (`citywatch.settings.Settings`), plus `overrides`."""
        base: dict[str, Any] = {"state_path": settings.alert_state_path,
                                "rules_dir": getattr(settings, "rules_dir", None),
                                "tz": getattr(settings, "tz", None) or "Asia/Shanghai"}
        return cls(**{**base, **overrides})
