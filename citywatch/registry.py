"""The optional device registry (`CW_DEVICES_FILE`, TOML, docs/contract.md §2).

Without a registry every well-formed device id is accepted. With one, a message from an
unregistered device, or whose topic kind/site disagree with the registry, is rejected.
Unknown keys in a `[[device]]` table are kept as rule parameters (e.g. `pm10_set_value`).

`district = "xiaodian"` on a device puts its site in that district (区县): API tokens may be
limited to districts (`CW_API_TOKENS`, api/README.md) and routes may match on it. Every
device of a site must name the same district (or none), so a site is in one district.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from citywatch.errors import ConfigError
from citywatch.topics import is_identifier

_KNOWN = {"id", "site", "kind", "expected_interval_s", "hj212_mn", "hj212_pw", "hj212_pw_none", "hj212_crc",
          "hj212_scale", "hj212_aliases", "hj212_ignore", "name", "equipment", "district"}

# What a device gives a site the means to measure for the six-100 report (`equipment = [...]`
# in its [[device]] table). A site's means are the union over its devices; a site none of
# whose devices lists any is taken to have all of them (every item is expected, so missing
# data is "sensor silent", never a pass).
EQUIPMENT: dict[str, str] = {
    "dust_monitor": "扬尘在线监测仪 (PM10 …)",
    "spray_relay": "喷淋/雾炮状态 (spray_on)",
    "plate_camera": "出入口车牌识别 (vehicle_exit)",
    "wash_sensor": "洗车台传感器 (washed, wash_seconds)",
    "cover_camera": "物料覆盖视频分析 (cover_ratio)",
    "hoarding_camera": "围挡视频分析 (hoarding_intact)",
    "hardened_survey": "路面硬化巡查/视频 (hardened_ratio)",
}


_DISTRICT_NAME = re.compile(r"[^\s|:,=]{1,64}")


def is_district_name(name: str) -> bool:
    """A district as the registry and CW_API_TOKENS may name it (see Registry.load)."""
    return _DISTRICT_NAME.fullmatch(name) is not None

@dataclass(frozen=True, slots=True)
class Device:
    id: str
    site: str
    kind: str
    expected_interval_s: float = 60.0
    name: str = ""
    district: str | None = None  # the 区县 its site belongs to; same for every device of a site
    hj212_mn: str | None = None
    hj212_pw: str | None = field(default=None, repr=False)  # a secret: never in repr/logs
    hj212_crc: Literal["strict", "modbus", "off"] = "strict"
    hj212_scale: float = 1.0
    hj212_aliases: dict[str, str] = field(default_factory=dict)
    # HJ 212 codes this device sends that have no canonical field and should be dropped
    # silently instead of dead-lettered (e.g. a21026 SO2 on a dust monitor).
    hj212_ignore: frozenset[str] = frozenset()
    params: dict[str, Any] = field(default_factory=dict)  # rule parameters as the registry file has them
    equipment: frozenset[str] | None = None  # None: not stated (see EQUIPMENT)


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

    def site_equipment(self, site: str) -> frozenset[str] | None:
        """The union of the site's devices' `equipment`; None when none of them states any
        (or the site is not registered): then every means is assumed."""
        stated = [d.equipment for d in self.devices.values() if d.site == site and d.equipment is not None]
        return frozenset().union(*stated) if stated else None

    def sites_by_district(self) -> dict[str, frozenset[str]]:
        """District name → its sites (a site without a district is in none)."""
        out: dict[str, set[str]] = {}
        for d in self.devices.values():
            if d.district:
                out.setdefault(d.district, set()).add(d.site)
        return {k: frozenset(v) for k, v in out.items()}

    @property
    def districts(self) -> frozenset[str]:
        return frozenset(d.district for d in self.devices.values() if d.district)

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
            # Districts are written into CW_API_TOKENS (`viewer:a|b`): a name never holds `|`,
            # `:`, `,`, `=` or white space, so those separators stay unambiguous there. Chinese
            # names (小店区) are fine.
            if "district" in raw and (not isinstance(raw["district"], str) or not is_district_name(raw["district"])):
                raise ConfigError(f"{where}: district must be 1-64 characters without white space, "
                                  f"'|', ':', ',' or '=' (e.g. \"xiaodian\" or \"小店区\")")
            if raw["id"] in devices:
                raise ConfigError(f"{where}: duplicate device id {raw['id']!r}")
            _check_hj212_identity(raw, where)
            crc = raw.get("hj212_crc", "strict")
            if crc not in ("strict", "modbus", "off"):
                raise ConfigError(f"{where}: hj212_crc must be strict, modbus or off")
            try:
                dev = Device(
                    id=raw["id"], site=raw["site"], kind=raw["kind"],
                    expected_interval_s=float(raw.get("expected_interval_s", 60.0)),
                    name=str(raw.get("name", "")), district=raw.get("district"),
                    hj212_mn=raw.get("hj212_mn"), hj212_pw=raw.get("hj212_pw"),
                    hj212_crc=crc, hj212_scale=float(raw.get("hj212_scale", 1.0)),
                    hj212_aliases=dict(raw.get("hj212_aliases", {})),
                    hj212_ignore=frozenset(str(c) for c in raw.get("hj212_ignore", ())),
                    params={k: v for k, v in raw.items() if k not in _KNOWN},
                )
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            equipment = raw.get("equipment")
            if equipment is not None:
                if not isinstance(equipment, list) or not all(isinstance(e, str) for e in equipment):
                    raise ConfigError(f"{where}: equipment must be a list of names")
                unknown = sorted(set(equipment) - set(EQUIPMENT))
                if unknown:
                    raise ConfigError(f"{where}: unknown equipment {unknown}; known: {sorted(EQUIPMENT)}")
                dev = replace(dev, equipment=frozenset(equipment))
            if dev.expected_interval_s <= 0:
                raise ConfigError(f"{where}: expected_interval_s must be > 0")
            devices[dev.id] = dev
            if dev.hj212_mn:
                if dev.hj212_mn in by_mn:
                    raise ConfigError(f"{where}: duplicate hj212_mn {dev.hj212_mn!r}")
                by_mn[dev.hj212_mn] = dev
        site_district: dict[str, tuple[str | None, str]] = {}
        for dev in devices.values():  # one district per site: a token's sites must be unambiguous
            first = site_district.setdefault(dev.site, (dev.district, dev.id))
            if first[0] != dev.district:
                raise ConfigError(f"{path}: site {dev.site!r} has devices in different districts "
                                  f"({first[1]}: {first[0] or 'none'}, {dev.id}: {dev.district or 'none'}); "
                                  "every device of a site needs the same district")
        return cls(devices, by_mn)


def _check_hj212_identity(raw: dict[str, Any], where: str) -> None:  # raw: one parsed registry entry
    """An HJ 212 monitor needs a password, unless the registry says on purpose that it has
    none (`hj212_pw_none = true`): a forgotten `hj212_pw` would let anyone upload as it."""
    mn, pw, none = raw.get("hj212_mn"), raw.get("hj212_pw"), raw.get("hj212_pw_none", False)
    if not isinstance(none, bool):
        raise ConfigError(f"{where} ({raw.get('id')}): hj212_pw_none must be true or false")
    if mn is None:
        return
    if not isinstance(mn, str) or not mn:
        raise ConfigError(f"{where} ({raw.get('id')}): hj212_mn must be a non-empty string")
    if pw is not None and (not isinstance(pw, str) or not pw):
        raise ConfigError(f"{where} ({raw.get('id')}): hj212_pw must be a non-empty string")
    if pw is None and not none:
        raise ConfigError(f"{where}: device {raw.get('id')!r} has hj212_mn but no hj212_pw: add hj212_pw = \"<the "
                          f"monitor's PW>\", or hj212_pw_none = true if it really sends none")
    if pw is not None and none:
        raise ConfigError(f"{where}: device {raw.get('id')!r} has both hj212_pw and hj212_pw_none = true: keep one")
