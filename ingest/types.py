"""The typed boundaries between ingest stages (slotted, not frozen, for construction speed
on the hot path — see citywatch/model.py; treat them as immutable).

An input (MQTT consumer, HJ 212 gateway, dead-letter replay) turns what it received into
an `Outcome` — `Accepted` or `Rejected` — and hands it to the `Sink` together with a
callback. The sink makes the outcome durable (spool for readings, dead-letter store for
rejections, fsync'd in a group commit) and only then calls the callback: that is where
the MQTT PUBACK or the HJ 212 answer goes out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from citywatch.model import Event, RawMessage, Reading


@dataclass(slots=True)
class Accepted:
    """Valid input: what will be stored (line protocol) and what the alert engine sees."""

    raw: RawMessage
    readings: tuple[Reading, ...] = ()
    events: tuple[Event, ...] = ()
    lines: tuple[str, ...] = ()  # InfluxDB line protocol, one per reading/event
    # Partial acceptance (HJ 212): reasons for the items of this message that were *not*
    # stored. The committer dead-letters the raw message with them beside the lines.
    partial: tuple[str, ...] = ()


@dataclass(slots=True)
class Rejected:
    """Invalid input: the raw bytes and every reason, for the dead-letter store."""

    raw: RawMessage
    reasons: tuple[str, ...] = field(default=())


Outcome = Accepted | Rejected


def internal_error(raw: RawMessage, exc: Exception) -> Rejected:
    """The outcome when a decoder raises (a bug): the message is kept, with the exception
    as its reason, and the input goes on with the next one."""
    return Rejected(raw, (f"internal_error: {type(exc).__name__}: {exc}"[:500],))

# Called (from the committer's thread) once the outcome is durable; `ok` is False only
# when the outcome could not be stored (disk failure) and the input must not acknowledge.
DurableCallback = Callable[[bool], None]


class Sink(Protocol):
    def submit(self, outcome: Outcome, on_durable: DurableCallback | None = None) -> None:
        """Queue `outcome` for the next group commit; thread-safe; may block for backpressure."""
        ...


class BatchSink(Sink, Protocol):
    def submit_many(self, items: list[tuple[Outcome, DurableCallback | None]]) -> None:
        """`submit` for several outcomes in order, with one hand-over (the MQTT input
        submits a whole socket read at once)."""
        ...
