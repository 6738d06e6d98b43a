"""Local time for the engine (`CW_TZ`): local days, ISO strings, and rule schedules.

`schedule: day | night | HH:MM-HH:MM` is local time. Outside its schedule a rule does not
hold, and window aggregates only use samples since the current period started. Both
answers are asked per reading on the hot path, so they are cached per schedule for the
current UTC minute whenever every instant of that minute has the same local minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from alerts.rules import parse_schedule


class LocalTime:
    """The engine's time zone and the schedule answers cached for the current minute."""

    def __init__(self, tz: ZoneInfo):
        self.tz = tz
        self._sched_cache: dict[str, tuple[int, bool]] = {}
        self._pstart_cache: dict[str, tuple[int, int]] = {}

    def local(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, self.tz)

    def local_day(self, ms: int) -> str:
        return self.local(ms).date().isoformat()

    def iso(self, ms: int | None) -> str | None:
        return None if ms is None else self.local(ms).isoformat(timespec="seconds")

    def _minute_cacheable(self, minute: int) -> bool:
        """Schedules switch at whole local minutes: within one UTC minute whose UTC offset is
        constant and a whole number of minutes, every instant has the same local minute, so
        schedule answers computed for one instant hold for the whole minute."""
        a = self.local(minute * 60000).utcoffset()
        b = self.local(minute * 60000 + 59999).utcoffset()
        return a == b and a is not None and a.total_seconds() % 60 == 0

    def schedule_active(self, schedule: str, ms: int) -> bool:
        minute = ms // 60000
        hit = self._sched_cache.get(schedule)
        if hit is not None and hit[0] == minute:
            return hit[1]
        start, end = parse_schedule(schedule)
        t = self.local(ms).time()
        active = start <= t < end if start < end else (t >= start or t < end)
        if self._minute_cacheable(minute):
            self._sched_cache[schedule] = (minute, active)
        return active

    def period_start(self, schedule: str, ms: int) -> int:
        """When the schedule's current period started (ms): window aggregates start there."""
        minute = ms // 60000
        hit = self._pstart_cache.get(schedule)
        if hit is not None and hit[0] == minute:
            return hit[1]
        start, _ = parse_schedule(schedule)
        local = self.local(ms)
        cand = datetime.combine(local.date(), start, self.tz)
        if cand > local:
            cand = datetime.combine(local.date() - timedelta(days=1), start, self.tz)
        out = int(cand.timestamp() * 1000)
        if self._minute_cacheable(minute):
            self._pstart_cache[schedule] = (minute, out)
        return out
