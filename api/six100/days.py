"""Local days in milliseconds: the six-100 report's calendar (a day is a local day, CW_TZ)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, tzinfo


def day_bounds(day: date, tz: tzinfo) -> tuple[int, int]:
    """[start, end) of a local day as epoch milliseconds."""
    start = datetime.combine(day, time(0), tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def month_days(month: str, today: date) -> list[date]:
    """The local days of `YYYY-MM` up to today."""
    first = date.fromisoformat(f"{month}-01")
    nxt = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    return [first + timedelta(days=i) for i in range((nxt - first).days) if first + timedelta(days=i) <= today]
