"""The values that flow through the pipeline.

A `RawMessage` is what arrived (MQTT or HJ 212); decoding turns it into `Reading`s and
`Event`s, or into a rejection with reasons. These are plain slotted dataclasses, not
pydantic models, because tens of thousands are made per second; pydantic validates the
untrusted payload at the boundary (ingest.decode) before these are built. They are not
`frozen=True` only because a frozen dataclass's constructor costs three times as much
(it sets every field through `object.__setattr__`): treat them as immutable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(slots=True)
class RawMessage:
    """Bytes as received, before any validation."""

    topic: str
    payload: bytes
    received_ms: int  # wall-clock epoch ms when it reached us
    source: str = "mqtt"  # mqtt | hj212 | replay


@dataclass(slots=True)
class Reading:
    """One validated telemetry sample of one device at one instant (event time, UTC ms)."""

    kind: str
    site: str
    device: str
    ts_ms: int
    values: dict[str, float | bool]
    seq: int | None = None
    # Per-field HJ 212 data flags (N F M S D C T B), as the monitor sent them; stored as
    # `<field>_flag`. Absent, N and S are valid; a field flagged otherwise (or a flag without
    # a value) is stored but excluded from compliance and threshold rules.
    quality: dict[str, str] = field(default_factory=dict)

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, UTC)


# The HJ 212 data flags that count as valid for judgement (an absent flag is valid too).
VALID_FLAGS = frozenset({"N", "S"})


def flag_valid(flag: str | None) -> bool:
    return flag is None or flag in VALID_FLAGS


@dataclass(slots=True)
class Event:
    """A discrete occurrence such as a vehicle leaving a site."""

    kind: str
    site: str
    device: str
    ts_ms: int
    type: str
    attributes: dict[str, float | bool | str]
