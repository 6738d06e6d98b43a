"""Device profiles as data: `simulators/devices/<kind>.yaml` → `DeviceProfile`.

A profile holds what every device of a kind shares: report interval, timestamp style,
digits per field and the signal model's parameters (validated by the model itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulators.errors import ScenarioError

DEVICES_DIR = Path(__file__).with_name("devices")


class _ProfileFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    interval_s: float = Field(gt=0)
    ts_format: Literal["rfc3339", "epoch_ms"] = "rfc3339"
    decimals: dict[str, int] = {}
    params: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    kind: str
    interval_s: float
    ts_format: Literal["rfc3339", "epoch_ms"]
    decimals: dict[str, int]
    params: dict[str, Any]


@cache
def load_profile(kind: str, directory: Path = DEVICES_DIR) -> DeviceProfile:
    path = directory / f"{kind}.yaml"
    try:
        doc = _ProfileFile.model_validate(yaml.safe_load(path.read_text("utf-8")))
    except OSError as exc:
        raise ScenarioError(f"no device profile for kind {kind!r} ({path})") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    if doc.kind != kind:
        raise ScenarioError(f"{path}: kind {doc.kind!r} does not match the file name")
    return DeviceProfile(doc.kind, doc.interval_s, doc.ts_format, dict(doc.decimals), dict(doc.params))


def available_kinds(directory: Path = DEVICES_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))
