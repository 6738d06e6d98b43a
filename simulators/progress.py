"""A plain-text progress line on stderr, redrawn in place with `\\r`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class ProgressLine:
    total: int  # expected messages (an estimate: events and duplicates come on top)
    stream: TextIO
    clock: Callable[[], float] = time.monotonic
    width: int = 24
    _t0: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._t0 = self.clock()

    def render(self, sent: int, acked: int) -> str:
        elapsed = max(self.clock() - self._t0, 1e-9)
        share = min(1.0, sent / self.total) if self.total else 1.0
        filled = int(share * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        rate = sent / elapsed
        return (f"[{bar}] {share * 100:5.1f}%  sent {sent:,}/~{self.total:,}  acked {acked:,}  "
                f"{rate:,.0f} msg/s  {elapsed:,.0f}s")

    def update(self, sent: int, acked: int) -> None:
        self.stream.write("\r" + self.render(sent, acked))
        self.stream.flush()

    def done(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
