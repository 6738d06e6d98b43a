"""Silences: time-bounded maintenance windows for a site, device and/or rule.

Alerts still change state (and are recorded) while silenced, but no external notification
goes out; a still-firing alert is notified when the silence ends (the timer does that).
Kept in memory, every change written through to the store at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from alerts.errors import AlertError, AlertNotFound
from alerts.store import AlertStore


class Silences:
    def __init__(self, store: AlertStore, wall_ms: Callable[[], int], iso: Callable[[int | None], str | None]):
        self._store = store
        self._wall_ms = wall_ms
        self._iso = iso
        self._silences = store.load_silences()

    def silenced(self, alert: Any, now: int) -> bool:
        """An alert (`lifecycle.Alert`: site, device, rule) is silenced at `now`."""
        for s in self._silences:
            if s["starts_ms"] <= now < s["ends_ms"] and all(
                    s[k] is None or s[k] == getattr(alert, k) for k in ("site", "device", "rule")):
                return True
        return False

    def add(self, *, by: str, ends_at: float | datetime, starts_at: float | datetime | None = None,
            site: str | None = None, device: str | None = None, rule: str | None = None,
            comment: str = "") -> dict[str, Any]:
        if not (site or device or rule):
            raise AlertError("a silence needs at least one of site, device, rule")

        def ms(v: float | datetime) -> int:
            return int((v.timestamp() if isinstance(v, datetime) else float(v)) * 1000)

        start = ms(starts_at) if starts_at is not None else self._wall_ms()
        end = ms(ends_at)
        if end <= start:
            raise AlertError("a silence must end after it starts")
        s = {"id": uuid.uuid4().hex[:16], "site": site, "device": device, "rule": rule, "starts_ms": start,
             "ends_ms": end, "created_by": by, "comment": comment, "created_ms": self._wall_ms()}
        self._store.add_silence(s)
        self._silences.append(s)
        return self.view(s)

    def end(self, silence_id: str) -> None:
        """End a silence now (one that ended already keeps its end)."""
        now = self._wall_ms()
        for s in self._silences:
            if s["id"] == silence_id:
                s["ends_ms"] = min(s["ends_ms"], now)
                self._store.end_silence(silence_id, s["ends_ms"])
                return
        raise AlertNotFound(f"no silence {silence_id}")

    def list(self, *, active_only: bool = True) -> list[dict[str, Any]]:
        now = self._wall_ms()
        return [self.view(s) for s in self._silences if not active_only or s["ends_ms"] > now]

    def view(self, s: dict[str, Any]) -> dict[str, Any]:
        return {"id": s["id"], "site": s["site"], "device": s["device"], "rule": s["rule"],
                "starts_at": self._iso(s["starts_ms"]), "ends_at": self._iso(s["ends_ms"]),
                "created_by": s["created_by"], "comment": s["comment"]}
