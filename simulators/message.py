"""The value the generator yields: one MQTT message at one simulated instant."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One message as a device would send it.

    `sim_ts_ms` is the simulated instant the device sends it (epoch ms, UTC); the reading's
    own timestamp is inside `payload` and differs from it for late, skewed and out-of-order
    faults. `fault` names the injected fault (None for a healthy message).
    """

    sim_ts_ms: int
    topic: str
    payload: bytes
    fault: str | None
    device: str
    kind: str
    site: str
