"""Fault injection on one device's block of readings.

Faults are applied in scenario order and a reading carries at most one fault, so the
`fault` label on each message says exactly what was done to it. Value faults change what
the sensor reads, stream faults change when (or whether) a reading is sent, payload faults
make bytes that a validator must reject.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulators.scenario import Fault

VALUE_FAULTS = frozenset({"stuck", "spike"})
STREAM_FAULTS = frozenset({"dropout", "duplicate", "out_of_order", "late", "clock_skew"})
PAYLOAD_FAULTS = frozenset({"not_json", "wrong_type", "nan", "missing_ts", "out_of_range"})
# The field a value or payload fault hits when the scenario does not name one.
# Marks a reading another fault already involves (out-of-order partner, duplicated original)
# so it gets no second fault; cleared before the block is encoded.
_RESERVED = "_reserved"
DEFAULT_FIELD = {"dust": "pm10", "heating": "secondary_return_pressure", "water": "turbidity"}


@dataclass(frozen=True, slots=True)
class DeviceFault:
    """A scenario fault resolved for one device: window in epoch ms and the field it hits."""

    spec: Fault
    begin_ms: int
    end_ms: int
    field: str


@dataclass
class Block:
    """Up to a few hundred consecutive readings of one device, as arrays."""

    t_ms: np.ndarray        # when the reading was taken (nominal)
    seq: np.ndarray
    values: dict[str, np.ndarray]
    ts_ms: np.ndarray = field(init=False)    # the timestamp the payload claims
    send_ms: np.ndarray = field(init=False)  # when it is sent
    keep: np.ndarray = field(init=False)
    fault: np.ndarray = field(init=False)    # None or the fault type, per reading
    dup_ms: np.ndarray = field(init=False)   # send time of a duplicate copy, or -1

    def __post_init__(self) -> None:
        n = self.t_ms.size
        self.ts_ms = self.t_ms.copy()
        self.send_ms = self.t_ms.copy()
        self.keep = np.ones(n, bool)
        self.fault = np.full(n, None, dtype=object)
        self.dup_ms = np.full(n, -1, dtype=np.int64)


@dataclass
class FaultState:
    """What a device remembers between blocks: the frozen value of a stuck sensor."""

    stuck: dict[int, float] = field(default_factory=dict)


def _hit(f: DeviceFault, block: Block, rng: np.random.Generator) -> np.ndarray:
    mask = (block.t_ms >= f.begin_ms) & (block.t_ms < f.end_ms)
    if f.spec.rate is not None:
        # Drawn for every reading, hit or not, so the stream stays reproducible.
        mask &= rng.random(block.t_ms.size) < f.spec.rate
    return mask & block.keep & np.equal(block.fault, None)


def apply_faults(block: Block, faults: list[DeviceFault], rng: np.random.Generator, state: FaultState) -> None:
    for i, f in enumerate(faults):
        mask = _hit(f, block, rng)
        kind, n = f.spec.type, int(mask.sum())
        if kind == "out_of_order":
            # Swap with the next reading of this block: the older one now arrives second.
            idx = np.flatnonzero(mask[:-1] & block.keep[1:] & np.equal(block.fault[1:], None))
            idx = idx[np.diff(np.concatenate([[-2], idx])) > 1]  # no overlapping pairs
            block.send_ms[idx], block.send_ms[idx + 1] = block.send_ms[idx + 1], block.send_ms[idx].copy()
            mask = np.zeros_like(mask)
            mask[idx] = True
            block.fault[idx + 1] = _RESERVED  # keeps the partner out of other faults
        elif n == 0:
            continue
        elif kind == "dropout":
            block.keep &= ~mask
            continue
        elif kind == "stuck":
            column = block.values[f.field]
            if i not in state.stuck:
                state.stuck[i] = float(column[np.flatnonzero(mask)[0]])
            column[mask] = state.stuck[i]
        elif kind == "spike":
            column = block.values[f.field]
            column[mask] = column[mask] * rng.uniform(*f.spec.params.get("factor", (5, 10)), n)
        elif kind == "clock_skew":
            block.ts_ms[mask] += int(float(f.spec.params.get("skew_s", 3600)) * 1000)
        elif kind == "late":
            lo, hi = f.spec.params.get("delay_s", (120, 900))
            block.send_ms[mask] += rng.integers(int(lo), int(hi) + 1, n) * 1000
        elif kind == "duplicate":
            block.dup_ms[mask] = block.send_ms[mask] + rng.integers(1, 6, n) * 1000
            block.fault[mask] = _RESERVED  # the original is healthy; its copy carries the label
            continue
        block.fault[mask] = kind
    block.fault[np.equal(block.fault, _RESERVED)] = None
