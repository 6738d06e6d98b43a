"""Fakes shipped beside the interfaces: a settable clock and a recording notifier."""

from __future__ import annotations

from dataclasses import dataclass, field

from alerts.notify import Delivery, Notification


@dataclass
class FakeClock:
    """`clock()` returns `now` (epoch seconds); tests move it with `advance`/`set`."""

    now: float = 1_764_201_600.0  # 2025-11-27T08:00:00+08:00

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, seconds: float) -> None:
        self.now = seconds


@dataclass
class RecordingNotifier:
    """Records what it was asked to send; `down=True` makes it fail retryably."""

    name: str = "recorder"
    down: bool = False
    retryable: bool = True
    sent: list[Notification] = field(default_factory=list)
    attempts: int = 0

    async def send(self, notification: Notification) -> Delivery:
        self.attempts += 1
        if self.down:
            return Delivery(False, retryable=self.retryable, detail="recorder down")
        self.sent.append(notification)
        return Delivery(True)

    def events(self) -> list[tuple[str, str, str]]:
        """(event, rule, severity) per delivered notification."""
        return [(n.event, n.alert["rule"], n.alert["severity"]) for n in self.sent]
