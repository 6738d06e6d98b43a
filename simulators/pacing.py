"""Maps simulated time onto wall-clock time: `speed` compresses it, `rate` caps msg/s.

Clock and sleep are injected so pacing is tested without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Sleeping for less than this costs more than it paces; let such small debts accumulate.
_MIN_SLEEP_S = 0.002


@dataclass
class Pacer:
    """`wait(sim_ts_ms)` returns when a message stamped `sim_ts_ms` is due.

    speed 0 = as fast as possible; speed 1 = real time; speed 60 = a simulated hour a
    minute. `rate` (msg/s) holds the sending rate under that cap; both may apply.
    """

    speed: float = 0.0
    rate: float | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _t0: float | None = field(default=None, init=False)
    _sim0: int = field(default=0, init=False)
    _count: int = field(default=0, init=False)

    def wait(self, sim_ts_ms: int) -> None:
        if self.speed <= 0 and not self.rate:
            return
        now = self.clock()
        if self._t0 is None:
            self._t0, self._sim0 = now, sim_ts_ms
        due = self._t0
        if self.speed > 0:
            due = max(due, self._t0 + (sim_ts_ms - self._sim0) / 1000.0 / self.speed)
        if self.rate:
            due = max(due, self._t0 + self._count / self.rate)
        self._count += 1
        if due - now >= _MIN_SLEEP_S:
            self.sleep(due - now)


def parse_speed(text: str | float) -> float:
    """`max` or `0` → 0 (as fast as possible), else a positive factor."""
    if isinstance(text, str) and text.strip().lower() in ("max", "inf", "fast"):
        return 0.0
    value = float(text)
    if value < 0:
        raise ValueError("speed must be >= 0 or 'max'")
    return value
