"""Named scenarios as data: `simulators/scenarios/<name>.yaml` → a validated `Scenario`.

A scenario states its fleet mix, local start time, duration, report intervals and the
episodes and faults with their times, so tests can check the stream against the file.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simulators.errors import ScenarioError
from simulators.timeutil import parse_duration_s, parse_local_start, resolve_at, to_ms

SCENARIOS_DIR = Path(__file__).with_name("scenarios")

FAULT_TYPES = (
    # stream faults: when and how often a reading is sent
    "dropout", "duplicate", "out_of_order", "late", "clock_skew",
    # value faults: what a sensor reads
    "stuck", "spike",
    # payload faults: bytes that must be rejected
    "not_json", "wrong_type", "nan", "missing_ts", "out_of_range",
)
FaultType = Literal[
    "dropout", "duplicate", "out_of_order", "late", "clock_skew", "stuck", "spike",
    "not_json", "wrong_type", "nan", "missing_ts", "out_of_range",
]

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Target(BaseModel):
    """Which devices an episode or fault applies to: filter by kind and sites, then take
    the first `count` (or `fraction`) of them in fleet order. Empty = every device."""

    model_config = _STRICT
    kind: str | None = None
    sites: list[str] | None = None
    count: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0, le=1)


class _Timed(BaseModel):
    model_config = _STRICT
    at: str | None = None               # "+90m", "14:30" (first at/after start) or ISO local
    duration: str | float | None = None  # "15m"; None = until the end of the scenario
    target: Target = Target()
    params: dict[str, Any] = {}

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | float | None) -> str | float | None:
        if v is not None:
            parse_duration_s(v)
        return v


class Episode(_Timed):
    type: str  # dust_episode, noise_night, night_transport, substation_leak, water_turbidity, silence, override
    at: str


class Fault(_Timed):
    type: FaultType
    rate: float | None = Field(default=None, gt=0, le=1)  # share of readings hit, else the window
    field: str | None = None


class Fleet(BaseModel):
    model_config = _STRICT
    mix: dict[str, float] = Field(min_length=1)  # kind -> share of sites

    @field_validator("mix")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError("mix weights must be >= 0 with a positive sum")
        return v


class Scenario(BaseModel):
    model_config = _STRICT
    name: str
    description: str = ""
    timezone: str = "Asia/Shanghai"
    start: datetime | str
    duration: str | float
    fleet: Fleet
    intervals_s: dict[str, float] = {}
    episodes: list[Episode] = []
    faults: list[Fault] = []

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def start_dt(self) -> datetime:
        return parse_local_start(self.start, self.tz)

    def duration_s(self) -> float:
        return parse_duration_s(self.duration)

    def window_ms(self, item: _Timed, *, start: datetime, end_ms: int) -> tuple[int, int]:
        """The [begin, end) of an episode or fault in epoch ms for a run starting at `start`."""
        begin = to_ms(resolve_at(item.at, start=start, tz=self.tz)) if item.at else to_ms(start)
        if item.duration is None:
            return begin, end_ms
        return begin, begin + int(parse_duration_s(item.duration) * 1000)


def scenario_path(name: str | Path) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return SCENARIOS_DIR / f"{name}.yaml"


def load_scenario(name: str | Path) -> Scenario:
    """A scenario by name (`dust-episode`) or by path to a YAML file."""
    path = scenario_path(name)
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except OSError as exc:
        raise ScenarioError(f"no scenario {name!r}; known: {', '.join(list_scenarios())}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    try:
        return Scenario.model_validate(doc)
    except ValidationError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc


def list_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIOS_DIR.glob("*.yaml"))


def describe_scenarios() -> list[tuple[str, str]]:
    """(name, first line of the description) for `simulate --list`."""
    out = []
    for name in list_scenarios():
        scenario = load_scenario(name)
        out.append((name, scenario.description.strip().splitlines()[0] if scenario.description else ""))
    return out
