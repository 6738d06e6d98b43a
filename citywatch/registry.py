"""The optional device registry (`CW_DEVICES_FILE`, TOML, CONTRACT §2).

Without a registry every well-formed device id is accepted. With one, a message from an
unregistered device, or whose topic kind/site disagree with the registry, is rejected.
Unknown keys in a `[[device]]` table are kept as rule parameters (e.g. `pm10_set_value`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from citywatch.errors import ConfigError
from citywatch.topics import is_identifier

_KNOWN = {"id", "site", "kind", "expected_interval_s", "hj212_mn", "hj212_pw", "hj212_crc", "hj212_scale",
          "hj212_aliases", "hj212_ignore", "name"}


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    site: str
    kind: str
    expected_interval_s: float = 60.0
    name: str = ""
    hj212_mn: str | None = None
    hj212_pw: str | None = field(default=None, repr=False)  # a secret: never in repr/logs
    hj212_crc: Literal["strict", "modbus", "off"] = "strict"
    hj212_scale: float = 1.0
    hj212_aliases: dict[str, str] = field(default_factory=dict)
    # HJ 212 codes this device sends that have no canonical field and should be dropped
    # silently instead of dead-lettered (e.g. a21026 SO2 on a dust monitor).
    hj212_ignore: frozenset[str] = frozenset()
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Registry:
    devices: dict[str, Device]
    by_mn: dict[str, Device]

    @classmethod
    def empty(cls) -> "Registry":
        return cls({}, {})

    @property
    def enabled(self) -> bool:
        return bool(self.devices)

    def get(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def check(self, kind: str, site: str, device: str) -> str | None:
        """None when the registry allows this (kind, site, device); else the reason."""
        if not self.devices:
            return None
        d = self.devices.get(device)
        if d is None:
            return f"unknown_device: device {device!r} is not in the device registry"
        if d.kind != kind or d.site != site:
            return (f"registry_mismatch: device {device!r} is registered as kind={d.kind} site={d.site}, "
                    f"topic says kind={kind} site={site}")
        return None

    @classmethod
    def load(cls, path: Path | None) -> "Registry":
        if path is None:
            return cls.empty()
        try:
            doc = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read device registry {path}: {exc}") from exc
        devices: dict[str, Device] = {}
        by_mn: dict[str, Device] = {}
        for i, raw in enumerate(doc.get("device", [])):
            where = f"{path}: device #{i + 1}"
            for key in ("id", "site", "kind"):
                if not isinstance(raw.get(key), str) or not is_identifier(raw[key]):
                    raise ConfigError(f"{where}: {key} must match [A-Za-z0-9_-]{{1,64}}")
            if raw["id"] in devices:
                raise ConfigError(f"{where}: duplicate device id {raw['id']!r}")
            crc = raw.get("hj212_crc", "strict")
            if crc not in ("strict", "modbus", "off"):
                raise ConfigError(f"{where}: hj212_crc must be strict, modbus or off")
            try:
                dev = Device(
                    id=raw["id"], site=raw["site"], kind=raw["kind"],
                    expected_interval_s=float(raw.get("expected_interval_s", 60.0)),
                    name=str(raw.get("name", "")),
                    hj212_mn=raw.get("hj212_mn"), hj212_pw=raw.get("hj212_pw"),
                    hj212_crc=crc, hj212_scale=float(raw.get("hj212_scale", 1.0)),
                    hj212_aliases=dict(raw.get("hj212_aliases", {})),
                    hj212_ignore=frozenset(str(c) for c in raw.get("hj212_ignore", ())),
                    params={k: v for k, v in raw.items() if k not in _KNOWN},
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            if dev.expected_interval_s <= 0:
                raise ConfigError(f"{where}: expected_interval_s must be > 0")
            devices[dev.id] = dev
            if dev.hj212_mn:
                if dev.hj212_mn in by_mn:
                    raise ConfigError(f"{where}: duplicate hj212_mn {dev.hj212_mn!r}")
                by_mn[dev.hj212_mn] = dev
        return cls(devices, by_mn)
