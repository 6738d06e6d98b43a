"""Loads tests/hj212/corpus/packets.yaml: the devices (a Registry) and each packet's wire
bytes and expectations. Shared by the decoder test and the real-gateway test."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from citywatch.registry import Device, Registry
from ingest.hj212.crc import crc_hex

CORPUS = Path(__file__).with_name("corpus") / "packets.yaml"


@dataclass(frozen=True)
class Store:
    measurement: str
    ts_ms: int
    values: dict[str, float]
    flags: dict[str, str]
    period: str | None = None


@dataclass(frozen=True)
class Packet:
    id: str
    source: str
    device: Device
    frames: list[bytes]  # one per packet on the wire (a split upload has several)
    wire: bytes  # what is sent, in one write
    answers: list[str]  # "9014", "9011:<QnRtn>"; empty = no answer expected
    stores: list[Store] = field(default_factory=list)
    dead_letter: list[str] = field(default_factory=list)  # reason codes, in order
    event: dict[str, Any] | None = None


def _frame(data: str, wrap: str, crc: str, length: int | None) -> bytes:
    body = data.encode("ascii")
    check = crc_hex(body, "modbus") if crc == "modbus" else crc_hex(body) if crc == "hj212" else crc
    declared = length if length is not None else len(body) + {"len+4": 4, "len+6": 6}.get(wrap, 0)
    tail = b"" if wrap == "bare" else b"\r\n"
    return b"##%04d" % declared + body + check.encode("ascii") + tail


def _ts_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def load() -> tuple[Registry, list[Packet]]:
    doc = yaml.safe_load(CORPUS.read_text("utf-8"))
    devices: dict[str, Device] = {}
    for d in doc["devices"]:
        devices[d["id"]] = Device(id=d["id"], site=d["site"], kind=d["kind"], hj212_mn=d["mn"], hj212_pw=d["pw"],
                                  hj212_crc=d.get("crc", "strict"), hj212_scale=float(d.get("scale", 1.0)),
                                  hj212_aliases=dict(d.get("aliases", {})),
                                  hj212_ignore=frozenset(d.get("ignore", ())))
    registry = Registry(devices, {d.hj212_mn: d for d in devices.values() if d.hj212_mn})
    packets = []
    for p in doc["packets"]:
        if "frame" in p:
            frames = [p["frame"].encode("latin-1")]
        else:
            parts = p["data"] if isinstance(p["data"], list) else [p["data"]]
            frames = [_frame(part, p.get("wrap", "standard"), str(p.get("crc", "hj212")), p.get("length"))
                      for part in parts]
        exp = p["expect"]
        answers = exp.get("answer", "none")
        answers = [] if answers == "none" else answers if isinstance(answers, list) else [answers]
        stores = exp.get("store") or []
        stores = stores if isinstance(stores, list) else [stores]
        packets.append(Packet(
            id=p["id"], source=p["source"], device=devices[p["device"]], frames=frames, wire=b"".join(frames),
            answers=[str(a) for a in answers],
            stores=[Store(s["measurement"], _ts_ms(s["time"]), {k: float(v) for k, v in s["values"].items()},
                          {k: str(v) for k, v in s["flags"].items()}, s.get("period")) for s in stores],
            dead_letter=list(exp.get("dead_letter", [])), event=exp.get("event")))
    return registry, packets


def registry_toml(registry: Registry) -> str:
    """The corpus devices as a CW_DEVICES_FILE."""
    out = []
    for d in registry.devices.values():
        lines = [f'id = "{d.id}"', f'site = "{d.site}"', f'kind = "{d.kind}"', f'hj212_mn = "{d.hj212_mn}"',
                 f'hj212_pw = "{d.hj212_pw}"', f'hj212_crc = "{d.hj212_crc}"', f"hj212_scale = {d.hj212_scale}"]
        if d.hj212_aliases:
            lines.append("hj212_aliases = { " + ", ".join(f'{k} = "{v}"' for k, v in d.hj212_aliases.items()) + " }")
        if d.hj212_ignore:
            lines.append("hj212_ignore = [" + ", ".join(f'"{c}"' for c in sorted(d.hj212_ignore)) + "]")
        out.append("[[device]]\n" + "\n".join(lines) + "\n")
    return "\n".join(out)
