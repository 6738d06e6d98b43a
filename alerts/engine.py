"""The alert engine: validated readings/events in, alert lifecycle and notifications out.

Evaluation is in event time (each reading's `ts_ms`): a device's rules are evaluated at
its watermark (the newest reading seen). A late reading within `late_tolerance_s` still
goes into the windows (so the next evaluation sees it) but does not move time backwards;
an older one is counted and ignored. The timer (`tick`) drives what no message can:
deadman (no data), keep_firing_for expiry, event auto-resolve, escalation, re-notify and
silence expiry. Its clock is injected: wall time, or in event-time replays the newest
event time seen.

Lifecycle per (rule, device): inactive → pending (condition true, waiting for `for` /
`consecutive`) → firing → resolved; `acked` is orthogonal. Every transition and the
outbox rows it causes are committed in one SQLite transaction at the end of each batch
(see store.py), so a restart neither repeats a notification nor forgets a pending start.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from citywatch.errors import CitywatchError
from citywatch.model import Event, Reading
from citywatch.registry import Registry
from citywatch.schema import kinds as load_kinds

from alerts.guard import NEVER, Hot, Jump, cold_interval
from alerts.notify import Backoff, HubSubscription, Notification, NotificationHub, Notifier, OutboxDispatcher, SinkNotifier
from alerts.rules import (SEVERITIES, Cond, DailyRatioRule, DeadmanRule, EventRule, Rule, StuckRule, Text,
                          Threshold, ThresholdRule, load_rules, parse_rule, parse_schedule, rule_to_dict)
from alerts.store import AlertStore
from alerts.window import Series

log = logging.getLogger("citywatch.alerts")

Clock = Callable[[], float]


class AlertError(CitywatchError):
    """An alert operation failed (unknown alert, bad silence, invalid rule)."""


class AlertNotFound(AlertError):
    pass


@dataclass
class _RState:
    """Evaluation state of one rule on one device (persisted as JSON in `rstate`)."""

    pending_since: int | None = None
    consecutive: int = 0
    clear_since: int | None = None
    alert_id: str | None = None
    day: str | None = None
    episodes: int = 0
    last_violation: int | None = None
    ratio_day: str | None = None
    num: int = 0
    den: int = 0

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "_RState":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def is_idle(self) -> bool:
        return self == _RState()


class _Feed:
    """One field of a device that rules read: its series (made on the first sample) and the
    guard trackers (alerts/guard.py) its samples update."""

    __slots__ = ("series", "lasts", "windows", "jumps")

    def __init__(self, series: Series | None):
        self.series = series
        self.lasts: tuple[Hot, ...] = ()  # `last` conditions: only the newest sample counts
        self.windows: tuple[Hot, ...] = ()  # windowed conditions
        self.jumps: tuple[Jump, ...] = ()  # stuck rules


@dataclass
class _Device:
    kind: str
    site: str
    device: str
    watermark: int = -1
    last_seen: int = 0
    series: dict[str, Series] = field(default_factory=dict)
    # The fields whose series changed since the last snapshot. A tuple, not a set: ~100
    # bytes against ~700 for a set of a typical device's fields, and cheap to keep since
    # it is almost always exactly the fields of the reading just taken.
    dirty: tuple[str, ...] = ()
    meta_dirty: bool = True
    # Built by `AlertEngine._watch` for the rules of generation `rules_gen` and the registry
    # entry `regdev` (its parameters move the bounds): per rule-indexed field its feed, per
    # rule slot (`_CRule.slot`) its guard (a tuple of Hot for a threshold rule, a Jump for
    # a stuck rule).
    feeds: dict[str, _Feed] = field(default_factory=dict)
    guards: list[Any] = field(default_factory=list)
    rules_gen: int = -1
    regdev: Any = None


def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """The fields of `a`, then those of `b` not in it."""
    return a + tuple(f for f in b if f not in a) if a else b


@dataclass(frozen=True, slots=True)
class _Result:
    active: bool | None
    value: float | bool | None = None
    threshold: float | bool | None = None


_NEXT_SEVERITY = {s: SEVERITIES[min(i + 1, len(SEVERITIES) - 1)] for i, s in enumerate(SEVERITIES)}
_UNKNOWN = (None, None, None)


class _CCond:
    """A threshold-rule condition prepared for the per-reading hot path."""

    __slots__ = ("c", "field", "agg", "approx", "win_ms", "need", "op", "want", "const", "param", "offset",
                 "plain", "rkey")

    def __init__(self, c: Cond, schedule: str | None):
        self.c = c
        self.field = c.field
        self.agg = c.agg
        # The rolling mean / energy mean is exact; numpy's (what alerts have always shown)
        # can differ in the last bits, so it is only trusted for decisions far from the bound.
        self.approx = c.agg in ("mean", "energy_mean")
        self.win_ms = int((c.window or 0) * 1000)
        # `_covered`: the samples must span min_coverage x the window (ms), same arithmetic
        self.need = c.min_coverage * (c.window or 0) * 1000
        self.op = c.op
        self.want = c.want
        t = c.threshold
        self.const = t.value + t.offset if t is not None and t.value is not None else None
        self.param = t.param if t is not None and t.param else None
        self.offset = t.offset if t is not None else 0.0
        # a {param, default} threshold without a baseline: the default when the param is unset
        self.plain = (t.default + t.offset if t is not None and t.value is None and t.baseline is None
                      and t.default is not None else None)
        self.rkey = (c.agg, self.win_ms, schedule)  # one rolling cursor per window shape


class _CRule:
    """A threshold or stuck rule prepared for the hot path."""

    __slots__ = ("rule", "id", "slot", "stuck", "schedule", "when", "clear", "approx", "win_ms", "need", "rkey")

    def __init__(self, rule: ThresholdRule | StuckRule):
        self.rule = rule
        self.id = rule.id
        self.slot = 0  # index of the rule among its kind's (a device's guards are per slot)
        self.stuck = isinstance(rule, StuckRule)
        if isinstance(rule, StuckRule):
            self.schedule = None
            self.when = self.clear = ()
            self.approx = False
            self.win_ms = int(rule.window * 1000)
            self.need = rule.min_coverage * rule.window * 1000
            self.rkey = ("stuck", self.win_ms, None)
        else:
            self.schedule = rule.schedule or None
            self.when = tuple(_CCond(c, self.schedule) for c in rule.when)
            self.clear = tuple(_CCond(c, self.schedule) for c in rule.clear) if rule.clear else ()
            self.approx = any(c.approx for c in (*self.when, *self.clear))
            self.win_ms, self.need, self.rkey = 0, 0.0, None


class _WatchPlan:
    """The guards of one kind's rules for devices with given registry parameters, as
    `AlertEngine._watch` instantiates them per device: `hots`, one (field, lo, hi, span)
    per distinct Hot tracker (equal conditions share one), in the order they are made;
    `guards`, per rule slot the stuck rule itself (its Jump is per device) or the indexes
    in `hots` of the trackers of the rule's conditions that have a cold interval."""

    __slots__ = ("guards", "hots")

    def __init__(self, rules: Iterable[_CRule], params: dict[str, Any]):
        self.hots: list[tuple[str, float, float, int | None]] = []
        self.guards: list[_CRule | tuple[int, ...]] = []
        seen: dict[tuple[str, tuple[float, float], int | None], int] = {}
        for cr in rules:
            if cr.stuck:
                self.guards.append(cr)
                continue
            mine = []
            for c in cr.when:
                interval = cold_interval(c.c, params)
                if interval is None:
                    continue  # no data-independent bound: this condition never rules the rule out
                span = None if c.agg == "last" else c.win_ms
                i = seen.get((c.field, interval, span))
                if i is None:
                    i = seen[(c.field, interval, span)] = len(self.hots)
                    self.hots.append((c.field, *interval, span))
                mine.append(i)
            self.guards.append(tuple(mine))


def _plain(v: Any) -> Any:
    """150.0 → 150 for display in payloads; other values unchanged."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 1e15 else v


def alert_id(rule: str, device: str, started_ms: int) -> str:
    return hashlib.sha1(f"{rule}|{device}|{started_ms}".encode()).hexdigest()[:20]


class AlertEngine:
    """See the module docstring. Construct with keyword arguments; `await run(stream)`."""

    def __init__(self, *, settings: Any = None, rules: dict[str, Rule] | Iterable[Rule] | None = None,
                 registry: Any = None, notifiers: Sequence[Notifier] = (), sink: Any = None,
                 clock: Clock = time.time, state_path: Path | str | None = None,
                 time_mode: Literal["wall", "event"] = "wall", tz: str | None = None,
                 late_tolerance_s: float = 300.0, repeat_interval_s: float = 4 * 3600.0,
                 snapshot_interval_s: float = 5.0, tick_interval_s: float = 1.0,
                 backoff: Backoff | None = None, max_samples_per_series: int = 8192,
                 default_interval_s: float = 10.0, retention_days: float = 90.0):
        if state_path is None:
            if settings is None:
                raise AlertError("AlertEngine needs state_path or settings")
            state_path = settings.alert_state_path
        if rules is None:
            rules = load_rules(getattr(settings, "rules_dir", None))
        self._clock = clock
        self._time_mode = time_mode
        self._tz = ZoneInfo(tz or getattr(settings, "tz", None) or "Asia/Shanghai")
        self._registry = registry
        self._late_ms = int(late_tolerance_s * 1000)
        self._repeat_ms = int(repeat_interval_s * 1000)
        self._snapshot_s = snapshot_interval_s
        self._tick_s = tick_interval_s
        self._max_samples = max_samples_per_series
        self._default_interval_s = default_interval_s
        self._retention_ms = int(retention_days * 86400_000)
        self._kinds = load_kinds()
        self.store = AlertStore(state_path)
        self.store.on_resumed = self._wake  # writes held on a full disk are stored: deliver their notifications
        self._mu = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hub = NotificationHub()
        self._hub_seq = 0
        self._event_now = -1
        # One dict lookup per reading for the registry entry (Registry.get is that lookup).
        self._registry_get: Callable[[str], Any] | None = (
            None if registry is None else registry.devices.get if isinstance(registry, Registry) else registry.get)
        # Skip idle rules that provably cannot hold (alerts/guard.py). Off only in tests
        # that check the skipping changes no outcome.
        self._use_guards = True
        self.stats = {"readings": 0, "events": 0, "late_dropped": 0, "evaluations": 0, "notifications": 0}

        notifiers = list(notifiers)
        if sink is not None:
            notifiers.append(SinkNotifier(sink))
        self._notifiers = notifiers
        self._dispatchers = [OutboxDispatcher(self.store, n, clock=clock, backoff=backoff or Backoff())
                             for n in notifiers]

        rule_map = dict(rules) if isinstance(rules, dict) else {r.id: r for r in rules}
        for row in self.store.query("SELECT doc FROM rule_overrides"):
            try:
                r = parse_rule(json.loads(row["doc"]), "rule override")
                rule_map[r.id] = r
            except CitywatchError as exc:
                log.error("ignoring stored rule override: %s", exc)
        self._sched_cache: dict[str, tuple[int, bool]] = {}
        self._pstart_cache: dict[str, tuple[int, int]] = {}
        self._install_rules(rule_map)

        # Pending transaction (flushed at the end of each batch / tick / API call).
        self._dirty_alerts: dict[str, dict[str, Any]] = {}
        self._deleted_alerts: set[str] = set()
        self._dirty_rstate: set[tuple[str, str]] = set()
        self._outbox: list[tuple[str, str, str, dict[str, Any], int]] = []
        self._live: list[Notification] = []

        self._load_state()

    # ------------------------------------------------------------------ rules and index
    def _install_rules(self, rules: dict[str, Rule]) -> None:
        """Build the lookup indexes, then swap them in at once."""
        by_field: dict[tuple[str, str], list[Rule]] = {}
        by_event: dict[tuple[str, str], list[Rule]] = {}
        deadman: dict[str, list[DeadmanRule]] = {}
        windows: dict[tuple[str, str], float] = {}
        for r in rules.values():
            if not r.enabled:
                continue
            if isinstance(r, (ThresholdRule, StuckRule)):
                for f in r.fields():
                    by_field.setdefault((r.kind, f), []).append(r)
                    windows[(r.kind, f)] = max(windows.get((r.kind, f), 0.0), r.max_window())
            elif isinstance(r, (EventRule, DailyRatioRule)):
                by_event.setdefault((r.kind, r.event), []).append(r)
            elif isinstance(r, DeadmanRule):
                deadman.setdefault(r.kind, []).append(r)
        compiled = {r.id: _CRule(r) for rs in by_field.values() for r in rs}
        index: dict[str, dict[str, list[_CRule]]] = {}
        for (kind, f), rs in by_field.items():
            index.setdefault(kind, {})[f] = [compiled[r.id] for r in rs]
        kind_rules: dict[str, list[_CRule]] = {}
        for cr in compiled.values():
            rs = kind_rules.setdefault(cr.rule.kind, [])
            cr.slot = len(rs)
            rs.append(cr)
        self.rules = dict(rules)
        self._by_field, self._by_event, self._deadman, self._windows = by_field, by_event, deadman, windows
        self._field_index = index
        self._kind_rules = kind_rules
        self._rules_gen = getattr(self, "_rules_gen", 0) + 1  # devices rebuild their guards
        self._todo: dict[tuple[str, tuple[str, ...]], list[_CRule]] = {}
        self._shapes: dict[tuple[str, str, float | None], tuple[int, int]] = {}  # see _series_shape
        # per kind, the registry parameters its threshold-rule conditions name (_watch_plan)
        self._guard_params = {kind: tuple(sorted({t.param for cr in crs for c in cr.when
                                                  for t in (c.c.threshold, c.c.low, c.c.high)
                                                  if t is not None and t.param}))
                              for kind, crs in kind_rules.items()}
        self._watch_plans: dict[tuple[str, tuple[Any, ...]], _WatchPlan] = {}
        for dev in getattr(self, "_devices", {}).values():  # cursors are per window shape
            for s in dev.series.values():
                s.drop_rollings()

    def list_rules(self) -> list[dict[str, Any]]:
        return [rule_to_dict(r) for r in sorted(self.rules.values(), key=lambda r: r.id)]

    def put_rule(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Validate one rule fully, then swap it in (and keep it across restarts)."""
        try:
            rule = parse_rule(doc, "PUT rule")
        except CitywatchError as exc:
            raise AlertError(str(exc)) from None
        with self._mu:
            rules = dict(self.rules)
            rules[rule.id] = rule
            self._install_rules(rules)
            self.store.execute("INSERT OR REPLACE INTO rule_overrides (id, doc, updated_ms) VALUES (?,?,?)",
                               (rule.id, json.dumps(rule_to_dict(rule), ensure_ascii=False), self._wall_ms()))
        return rule_to_dict(rule)

    # ------------------------------------------------------------------ state loading
    def _load_state(self) -> None:
        self._rstate: dict[tuple[str, str], _RState] = {
            k: _RState.from_json(v) for k, v in self.store.load_rstate().items()}
        # The same states by device, then rule id: a reading finds its device's in one lookup
        # (most devices have none). Kept in step by `_state` and `_flush`.
        self._device_states: dict[str, dict[str, _RState]] = {}
        for (rule_id, device), st in self._rstate.items():
            self._device_states.setdefault(device, {})[rule_id] = st
        self._active: dict[str, dict[str, Any]] = {}
        for row in self.store.load_active_alerts():
            row["value"] = json.loads(row["value"]) if row["value"] is not None else None
            row["threshold"] = json.loads(row["threshold"]) if row["threshold"] is not None else None
            self._active[row["id"]] = row
        self._devices: dict[str, _Device] = {}
        for d in self.store.load_devices():
            self._devices[d["device"]] = _Device(d["kind"], d["site"], d["device"], d["watermark_ms"],
                                                 d["last_seen_ms"], meta_dirty=False)
            self._event_now = max(self._event_now, d["watermark_ms"])
        for s in self.store.load_series():
            dev = self._devices.get(s["device"])
            if dev is not None:
                cap, window_ms = self._series_shape(dev, s["field"])
                if cap:  # a field no rule reads any more is not restored
                    dev.series[s["field"]] = Series.load(cap, s["ts"], s["v"], span_ms=window_ms,
                                                         max_cap=self._max_samples)
        self._silences = [dict(r) for r in self.store.query("SELECT * FROM silences")]

    # ------------------------------------------------------------------ time helpers
    def _wall_ms(self) -> int:
        return int(self._clock() * 1000)

    def now_ms(self) -> int:
        """The timer's 'now': wall clock, or in event mode the newest event time seen."""
        if self._time_mode == "event":
            return self._event_now if self._event_now >= 0 else self._wall_ms()
        return self._wall_ms()

    def _local(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, self._tz)

    def _local_day(self, ms: int) -> str:
        return self._local(ms).date().isoformat()

    def _iso(self, ms: int | None) -> str | None:
        return None if ms is None else self._local(ms).isoformat(timespec="seconds")

    def _minute_cacheable(self, minute: int) -> bool:
        """Schedules switch at whole local minutes: within one UTC minute whose UTC offset is
        constant and a whole number of minutes, every instant has the same local minute, so
        schedule answers computed for one instant hold for the whole minute."""
        a = self._local(minute * 60000).utcoffset()
        b = self._local(minute * 60000 + 59999).utcoffset()
        return a == b and a is not None and a.total_seconds() % 60 == 0

    def _schedule_active(self, schedule: str, ms: int) -> bool:
        minute = ms // 60000
        hit = self._sched_cache.get(schedule)
        if hit is not None and hit[0] == minute:
            return hit[1]
        start, end = parse_schedule(schedule)
        t = self._local(ms).time()
        active = start <= t < end if start < end else (t >= start or t < end)
        if self._minute_cacheable(minute):
            self._sched_cache[schedule] = (minute, active)
        return active

    def _period_start(self, schedule: str, ms: int) -> int:
        minute = ms // 60000
        hit = self._pstart_cache.get(schedule)
        if hit is not None and hit[0] == minute:
            return hit[1]
        start, _ = parse_schedule(schedule)
        local = self._local(ms)
        cand = datetime.combine(local.date(), start, self._tz)
        if cand > local:
            cand = datetime.combine(local.date() - timedelta(days=1), start, self._tz)
        out = int(cand.timestamp() * 1000)
        if self._minute_cacheable(minute):
            self._pstart_cache[schedule] = (minute, out)
        return out

    # ------------------------------------------------------------------ devices
    def _device_interval(self, device: str, kind: str) -> float | None:
        d = self._registry.get(device) if self._registry is not None else None
        return d.expected_interval_s if d is not None else None

    def _params(self, device: str) -> dict[str, Any]:
        d = self._registry.get(device) if self._registry is not None else None
        return d.params if d is not None else {}

    def _series_shape(self, dev: _Device, fld: str) -> tuple[int, int]:
        """(starting capacity, longest window in ms) of the device's series for `fld`;
        (0, 0) when no rule reads it. Depends only on the kind, the field and the device's
        expected interval, so it is worked out once for them (and the ints are shared)."""
        interval = self._device_interval(dev.device, dev.kind)
        key = (dev.kind, fld, interval)
        shape = self._shapes.get(key)
        if shape is None:
            window = self._windows.get((dev.kind, fld))
            if window is None:
                shape = (0, 0)
            else:
                per = interval or self._default_interval_s
                cap = int(min(self._max_samples, max(16, math.ceil(window / per * 1.25) + 8)))
                shape = (cap, int(window * 1000))
            if len(self._shapes) >= 4096:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def _new_series(self, dev: _Device, fld: str) -> Series:
        # Starts sized for the expected interval; grows (up to the cap) if the device
        # reports faster than expected, so the longest window always fits.
        cap, window_ms = self._series_shape(dev, fld)
        return Series(cap, span_ms=window_ms, max_cap=self._max_samples)

    def _device(self, kind: str, site: str, device: str) -> _Device:
        dev = self._devices.get(device)
        if dev is None or dev.kind != kind or dev.site != site:
            dev = _Device(kind, site, device)
            self._devices[device] = dev
        return dev

    # ------------------------------------------------------------------ ingest
    def process(self, batch: Any) -> None:
        """Evaluate one Batch (readings + events) and commit the consequences."""
        with self._mu:
            for r in batch.readings:
                self._reading(r)
            for e in batch.events:
                self._event(e)
            self._flush()

    def process_readings(self, readings: Iterable[Reading], events: Iterable[Event] = ()) -> None:
        with self._mu:
            for r in readings:
                self._reading(r)
            for e in events:
                self._event(e)
            self._flush()

    def _seen(self, dev: _Device, ts_ms: int) -> None:
        if ts_ms > self._event_now:
            self._event_now = ts_ms
        seen = ts_ms if self._time_mode == "event" else self._wall_ms()
        if seen > dev.last_seen:
            dev.last_seen = seen
            dev.meta_dirty = True
        if dev.device not in self._device_states:
            return  # no state, so no firing deadman alert to resolve
        for rule in self._deadman.get(dev.kind, ()):
            st = self._rstate.get((rule.id, dev.device))
            if st is not None and st.alert_id in self._active:
                self._resolve(rule, dev, st, seen, value=0.0)

    def _reading(self, r: Reading) -> None:
        stats = self.stats
        stats["readings"] += 1
        ts = r.ts_ms
        dev = self._devices.get(r.device)
        if dev is None or dev.kind != r.kind or dev.site != r.site:
            dev = self._device(r.kind, r.site, r.device)
        self._seen(dev, ts)
        wm = dev.watermark
        if wm >= 0 and ts < wm - self._late_ms:
            stats["late_dropped"] += 1
            return
        advanced = ts > wm
        regdev = self._registry_get(r.device) if self._registry_get is not None else None
        if dev.rules_gen != self._rules_gen or dev.regdev is not regdev:
            self._watch(dev, regdev)
        feeds = dev.feeds  # the rule-indexed fields of the kind
        hit: list[str] = []
        if feeds:
            quality = r.quality
            for f, v in r.values.items():
                if f not in feeds or (quality and f in quality):  # flagged data is never judged
                    continue
                feed = feeds[f]
                s = feed.series
                if s is None:
                    s = feed.series = dev.series[f] = self._new_series(dev, f)
                x = float(v)
                if feed.jumps:
                    prev = s.last()
                    newest = s.add(ts, x)
                    for jump in feed.jumps:
                        jump.appended(s, prev, ts, x)
                else:
                    newest = s.add(ts, x)
                # Hot.seen, inlined: a sample outside [lo, hi] could make the condition hold
                if newest:
                    for h in feed.lasts:
                        h.ts = NEVER if h.lo <= x <= h.hi else ts
                for h in feed.windows:
                    if ts > h.ts and not h.lo <= x <= h.hi:
                        h.ts = ts
                hit.append(f)
        if hit:
            fields = tuple(hit)
            if dev.dirty != fields:  # a device's readings mostly carry the same fields
                dev.dirty = _union(dev.dirty, fields)
        if not advanced:
            return  # late or duplicate: windows updated, time does not go back
        dev.watermark = ts
        dev.meta_dirty = True
        if not hit:
            return
        key = (r.kind, fields)
        todo = self._todo.get(key)
        if todo is None:
            todo = self._plan(key)
        stats["evaluations"] += len(todo)
        states = self._device_states.get(dev.device)
        guards = dev.guards if self._use_guards else None
        for cr in todo:
            st = states.get(cr.id) if states is not None else None
            if guards is not None and (
                    st is None or (st.alert_id is None and st.pending_since is None and not st.consecutive)):
                # Idle, so evaluating a rule that cannot hold now would change nothing (the
                # same test as in _eval_*): skip it when its guard proves that cheaply.
                guard = guards[cr.slot]
                if cr.stuck:
                    if guard.not_flat(dev.series[cr.rule.field], ts):
                        continue
                else:
                    for h in guard:  # all conditions must hold: one that cannot is enough
                        if h.ts <= ts - h.span:
                            break
                    else:
                        if cr.schedule is None or self._schedule_active(cr.schedule, ts):
                            self._eval_threshold(cr, dev, ts)
                    continue
            if cr.stuck:
                self._eval_stuck(cr, dev, ts)
            else:
                self._eval_threshold(cr, dev, ts)

    def _watch(self, dev: _Device, regdev: Any) -> None:
        """(Re)build the device's feeds and guards (alerts/guard.py) for the current rules
        and its registry entry `regdev`, starting the trackers from the samples kept."""
        plan = self._watch_plan(dev.kind, regdev.params if regdev is not None else {})
        feeds = {f: _Feed(dev.series.get(f)) for f in self._field_index.get(dev.kind, ())}
        # Each tracker is made as a 1-tuple, used as is by a field it is the only tracker
        # of (`lasts` / `windows`) and by the rules it is the only guard of: most trackers
        # are both, and one tuple instead of two or three is ~50 bytes less each.
        hots: list[tuple[Hot]] = []
        for f, lo, hi, span in plan.hots:
            feed = feeds[f]
            one = (Hot(lo, hi, span).scan(feed.series),)
            if one[0].last:
                feed.lasts = feed.lasts + one if feed.lasts else one
            else:
                feed.windows = feed.windows + one if feed.windows else one
            hots.append(one)
        guards: list[Any] = []
        for g in plan.guards:
            if isinstance(g, _CRule):  # a stuck rule
                feed = feeds[g.rule.field]  # type: ignore[union-attr]
                jump = Jump(g.rule.tolerance, g.win_ms).scan(feed.series)  # type: ignore[union-attr]
                feed.jumps += (jump,)
                guards.append(jump)
            elif len(g) == 1:
                guards.append(hots[g[0]])
            else:
                guards.append(tuple([hots[i][0] for i in g]))
        dev.feeds, dev.guards, dev.rules_gen, dev.regdev = feeds, guards, self._rules_gen, regdev

    def _watch_plan(self, kind: str, params: dict[str, Any]) -> _WatchPlan:
        """The plan `_watch` follows for a device of `kind` with registry `params`. It
        depends only on the values of the few parameters the kind's thresholds name, so
        it is made once per distinct values and shared: a device's first reading does not
        redo the `cold_interval` work, and the bounds (floats) are not copied per device."""
        names = self._guard_params.get(kind, ())
        # the type too: True == 1 as a key, but True is not a number to `static_threshold`
        values = tuple([(type(v), v) for v in map(params.get, names)])
        key = (kind, values)
        try:
            plan = self._watch_plans.get(key)
        except TypeError:  # an unhashable parameter value: plan this device on its own
            return _WatchPlan(self._kind_rules.get(kind, ()), params)
        if plan is None:
            plan = _WatchPlan(self._kind_rules.get(kind, ()), params)
            if len(self._watch_plans) >= 4096:
                self._watch_plans.clear()
            self._watch_plans[key] = plan
        return plan

    def _plan(self, key: tuple[str, tuple[str, ...]]) -> list[_CRule]:
        """The rules a reading with these (rule-indexed) fields evaluates, in index order."""
        index = self._field_index[key[0]]
        todo: dict[str, _CRule] = {}
        for f in key[1]:
            for cr in index[f]:
                todo.setdefault(cr.id, cr)
        if len(self._todo) >= 4096:
            self._todo.clear()
        out = self._todo[key] = list(todo.values())
        return out

    # ------------------------------------------------------------------ conditions
    def _threshold(self, spec: Threshold, dev: _Device, t: int, series: Series | None) -> float | None:
        if spec.value is not None:
            return spec.value + spec.offset
        if spec.param:
            p = self._params(dev.device).get(spec.param)
            if isinstance(p, (int, float)) and not isinstance(p, bool):
                return float(p) + spec.offset
        if spec.baseline is not None and series is not None:
            b = spec.baseline
            wms = int(b.window * 1000)
            roll = series.rolling((b.agg, wms, None), b.agg)
            agg = roll.query(t - wms, t, b.min_coverage * b.window * 1000)
            if agg is not None:
                if b.agg == "mean":
                    agg = roll.numpy_value()  # a threshold is shown in alerts: numpy's mean, as always
                base = agg * b.factor
                if spec.floor is not None:
                    base = max(base, spec.floor)
                return base + spec.offset
            if spec.default is None:
                return None
        if spec.default is None:
            return None
        return spec.default + spec.offset

    @staticmethod
    def _covered(ts: Any, window_s: float, min_coverage: float) -> bool:
        n = len(ts)
        if n < 2:
            return False
        span = int(ts[-1]) - int(ts[0])
        typical = span / (n - 1)
        return span + typical >= min_coverage * window_s * 1000

    def _cond(self, c: _CCond, dev: _Device, t: int, shift: float, schedule: str | None,
              exact: bool = False) -> tuple[bool | None, Any, Any]:
        """(active, value, threshold) of one condition at time t. The decision is always the
        one numpy's aggregate gives; with `exact` the value is numpy's too (it goes into
        alerts), otherwise a mean may be the (last-bits different) rolling one."""
        s = dev.series.get(c.field)
        if s is None or len(s._ts) == s._lo:  # no samples
            return _UNKNOWN
        agg = c.agg
        roll = None
        if agg == "last":
            value = s._v[-1]
        else:
            start = t - c.win_ms
            if schedule is not None:
                start = max(start, self._period_start(schedule, t) - 1)
            roll = s.rolls.get(c.rkey) or s.rolling(c.rkey, agg)
            value = roll.query(start, t, c.need)
            if value is None:
                return _UNKNOWN
            if c.approx and (exact or c.op == "outside" or roll.unsure()):
                value = roll.numpy_value()
                roll = None
        op = c.op
        if op == "is":
            got = bool(value >= 0.5) if not isinstance(value, bool) else value
            return (got == c.want, got, c.want)
        if op == "outside":
            res = self._compare(c.c, value, dev, t, s, shift)
            return (res.active, res.value, res.threshold)
        thr = c.const
        if thr is None:  # `_threshold`, with its common cases inlined
            p = None
            if c.param is not None and self._registry is not None:
                d = self._registry.get(dev.device)
                if d is not None:
                    p = d.params.get(c.param)
            if p is not None and isinstance(p, (int, float)) and not isinstance(p, bool):
                thr = float(p) + c.offset
            elif c.plain is not None:
                thr = c.plain
            else:
                assert c.c.threshold is not None
                thr = self._threshold(c.c.threshold, dev, t, s)
                if thr is None:
                    return (None, value, None)
        bound = thr - shift if op == "above" or op == "at_least" else thr + shift
        if roll is not None and c.approx and abs(value - bound) <= (abs(value) + 1.0) * 1e-9:
            value = roll.numpy_value()  # too close to call with the rolling value
        if op == "above":
            active = value > bound
        elif op == "below":
            active = value < bound
        elif op == "at_least":
            active = value >= bound
        else:
            active = value <= bound
        return (active, value, thr)

    def _compare(self, c: Cond, value: Any, dev: _Device, t: int, s: Series | None, shift: float) -> _Result:
        if c.op == "is":
            got = bool(value >= 0.5) if not isinstance(value, bool) else value
            return _Result(got == c.want, got, c.want)
        value = float(value)
        if c.op == "outside":
            assert c.low is not None and c.high is not None
            lo, hi = self._threshold(c.low, dev, t, s), self._threshold(c.high, dev, t, s)
            if lo is None or hi is None:
                return _Result(None, value)
            bound = lo if value < (lo + hi) / 2 else hi
            return _Result(value < lo + shift or value > hi - shift, value, bound)
        assert c.threshold is not None
        thr = self._threshold(c.threshold, dev, t, s)
        if thr is None:
            return _Result(None, value)
        active = {"above": value > thr - shift, "below": value < thr + shift,
                  "at_least": value >= thr - shift, "at_most": value <= thr + shift}[c.op]
        return _Result(active, value, thr)

    def _all(self, conds: Sequence[_CCond], dev: _Device, t: int, shift: float,
             schedule: str | None, exact: bool = False) -> tuple[bool | None, Any, Any]:
        """All conditions hold: False if any is False, else None if any is unknown; value and
        threshold are the first condition's. Conditions have no side effects, so the first
        False decides."""
        first = None
        unknown = False
        for c in conds:
            r = self._cond(c, dev, t, shift, schedule, exact)
            if first is None:
                first = r
            if r[0] is False:
                return (False, first[1], first[2])
            if r[0] is None:
                unknown = True
        assert first is not None
        return (None if unknown else True, first[1], first[2])

    # ------------------------------------------------------------------ rule kinds
    def _eval_threshold(self, cr: _CRule, dev: _Device, t: int) -> None:
        rule: ThresholdRule = cr.rule  # type: ignore[assignment]
        schedule = cr.schedule
        if schedule and not self._schedule_active(schedule, t):
            st = self._rstate.get((rule.id, dev.device))
            if st is not None and (st.alert_id or st.pending_since is not None):
                # Out of its schedule the rule does not hold: drop pending, resolve firing.
                self._step(rule, dev, t, _Result(False), still=False, keep_s=0.0)
            return
        when = cr.when
        if len(when) == 1:
            active, value, thr = self._cond(when[0], dev, t, 0.0, schedule)
        else:
            active, value, thr = self._all(when, dev, t, 0.0, schedule)
        if active is None:
            return
        st = self._rstate.get((rule.id, dev.device))
        if not active and (st is None or (st.alert_id is None and st.pending_since is None and not st.consecutive)):
            return  # idle and the condition does not hold: `_step` would change nothing
        if cr.approx:  # something may happen: the values that go into alerts are numpy's
            active, value, thr = self._all(when, dev, t, 0.0, schedule, True)
            if active is None:
                return
        still: bool | None = active
        if st is not None and st.alert_id and (cr.clear or rule.hysteresis):
            # `still` only matters to a firing alert: evaluate clear / hysteresis just then
            alert = self._active.get(st.alert_id)
            if alert is not None and alert["state"] == "firing":
                if cr.clear:
                    clr = self._all(cr.clear, dev, t, 0.0, schedule, True)[0]
                    still = None if clr is None else not clr
                else:
                    still = self._all(cr.when, dev, t, rule.hysteresis, schedule, True)[0]
        self._step(rule, dev, t, _Result(active, value, thr), still=still, keep_s=rule.keep_firing_for,
                   for_s=rule.for_, consecutive=rule.consecutive)

    def _eval_stuck(self, cr: _CRule, dev: _Device, t: int) -> None:
        rule: StuckRule = cr.rule  # type: ignore[assignment]
        s = dev.series.get(rule.field)
        if s is None:
            return
        roll = s.rolls.get(cr.rkey) or s.rolling(cr.rkey, "stuck")
        n = roll.sync(t - cr.win_ms, t)
        if n < rule.min_samples or not roll.covered(cr.need):
            return
        flat = roll.max_minus_min() <= rule.tolerance  # type: ignore[attr-defined]
        if not flat:
            st = self._rstate.get((rule.id, dev.device))
            if st is None or (st.alert_id is None and st.pending_since is None and not st.consecutive):
                return  # idle and not flat: `_step` would change nothing
        self._step(rule, dev, t, _Result(flat, roll.value("last"), rule.tolerance), still=flat, keep_s=0.0)

    def _attr(self, c: Cond, attrs: dict[str, Any], dev: _Device, t: int) -> _Result:
        v = attrs.get(c.field)
        if v is None or isinstance(v, str):
            return _Result(None)
        if c.op == "is":
            return _Result(bool(v) == c.want, bool(v), c.want)
        return self._compare(c, float(v), dev, t, None, 0.0)

    def _event(self, e: Event) -> None:
        self.stats["events"] += 1
        dev = self._device(e.kind, e.site, e.device)
        self._seen(dev, e.ts_ms)
        for rule in self._by_event.get((e.kind, e.type), ()):
            self.stats["evaluations"] += 1
            st = self._state(rule.id, dev.device)
            alert = self._active.get(st.alert_id) if st.alert_id else None
            if isinstance(rule, EventRule):
                results = [self._attr(c, e.attributes, dev, e.ts_ms) for c in rule.when]
                if rule.match == "any":
                    hit = next((r for r in results if r.active), None)
                else:
                    hit = results[0] if results and all(r.active for r in results) else None
                if hit is not None:
                    st.last_violation = e.ts_ms
                    self._dirty_rstate.add((rule.id, dev.device))
                    if alert is not None:
                        alert["count"] += 1
                        alert["value"] = self._round(rule, hit.value)
                        self._touch(alert)
                    else:
                        self._fire(rule, dev, st, e.ts_ms, hit)
                elif alert is not None:
                    self._resolve(rule, dev, st, e.ts_ms, value=None)
            elif isinstance(rule, DailyRatioRule):
                day = self._local_day(e.ts_ms)
                if st.ratio_day is not None and day < st.ratio_day:
                    continue  # a late event of a past day does not change today's ratio
                if st.ratio_day != day:
                    st.ratio_day, st.num, st.den = day, 0, 0
                st.den += 1
                if all(self._attr(c, e.attributes, dev, e.ts_ms).active is not False for c in rule.numerator):
                    st.num += 1
                self._dirty_rstate.add((rule.id, dev.device))
                ratio = 100.0 * st.num / st.den
                limit = self._threshold(rule.below, dev, e.ts_ms, None)
                active = limit is not None and st.den >= rule.min_events and ratio < limit
                res = _Result(active, ratio, limit)
                if alert is not None:
                    if active:
                        alert["value"] = self._round(rule, ratio)
                        self._touch(alert)
                    else:
                        self._resolve(rule, dev, st, e.ts_ms, value=ratio)
                elif active:
                    self._fire(rule, dev, st, e.ts_ms, res)

    # ------------------------------------------------------------------ lifecycle
    def _state(self, rule_id: str, device: str) -> _RState:
        key = (rule_id, device)
        st = self._rstate.get(key)
        if st is None:
            st = self._rstate[key] = _RState()
            self._device_states.setdefault(device, {})[rule_id] = st
        return st

    def _step(self, rule: Rule, dev: _Device, t: int, res: _Result, *, still: bool | None, keep_s: float,
              for_s: float = 0.0, consecutive: int = 1) -> None:
        key = (rule.id, dev.device)
        st = self._state(rule.id, dev.device)
        alert = self._active.get(st.alert_id) if st.alert_id else None
        if alert is not None and alert["state"] == "firing":
            if still is None:
                return
            if still:
                if st.clear_since is not None:
                    st.clear_since = None
                    self._dirty_rstate.add(key)
                return
            if st.clear_since is None:
                st.clear_since = t
                self._dirty_rstate.add(key)
            if t - st.clear_since >= keep_s * 1000:
                self._resolve(rule, dev, st, t, value=res.value)
            return
        if res.active:
            if st.pending_since is None:
                st.pending_since = t
            st.consecutive += 1
            self._dirty_rstate.add(key)
            if t - st.pending_since >= for_s * 1000 and st.consecutive >= consecutive:
                self._fire(rule, dev, st, t, res)
            elif alert is None:
                row = self._new_alert(rule, dev, st, st.pending_since, res, severity=rule.severity,
                                      state="pending", occurrence=st.episodes + 1)
                st.alert_id = row["id"]
                self._publish_live("pending", row)
        elif st.pending_since is not None or st.consecutive or alert is not None:
            st.pending_since, st.consecutive = None, 0
            self._dirty_rstate.add(key)
            if alert is not None:  # pending that did not last: it never existed for anyone
                self._active.pop(alert["id"], None)
                self._dirty_alerts.pop(alert["id"], None)
                self._deleted_alerts.add(alert["id"])
                st.alert_id = None

    def _fire(self, rule: Rule, dev: _Device, st: _RState, t: int, res: _Result) -> None:
        day = self._local_day(t)
        if st.day != day:
            st.day, st.episodes = day, 0
        st.episodes += 1
        severity, message, action = rule.severity, rule.message, rule.action
        per_day = getattr(rule, "per_day", None)
        if per_day is not None and st.episodes >= per_day.nth:
            severity = per_day.severity
            message = per_day.message or message
            action = per_day.action or action
        started = st.pending_since if st.pending_since is not None else t
        old = self._active.get(st.alert_id) if st.alert_id else None
        row = self._new_alert(rule, dev, st, started, res, severity=severity, state="firing",
                              occurrence=st.episodes, message=message, action=action)
        if old is not None and old["id"] != row["id"]:
            self._active.pop(old["id"], None)
            self._deleted_alerts.add(old["id"])
        row["fired_ms"] = t
        st.alert_id = row["id"]
        st.pending_since, st.consecutive, st.clear_since = None, 0, None
        self._dirty_rstate.add((rule.id, dev.device))
        silenced = self._silenced(row, self.now_ms())
        row["notified"] = 0 if silenced else 1
        row["last_notified_ms"] = None if silenced else self.now_ms()
        self._notify("firing", row, t, external=not silenced)

    def _resolve(self, rule: Rule, dev: _Device, st: _RState, t: int, *, value: Any) -> None:
        row = self._active.pop(st.alert_id, None) if st.alert_id else None
        st.alert_id, st.clear_since, st.pending_since, st.consecutive = None, None, None, 0
        st.last_violation = None
        self._dirty_rstate.add((rule.id, dev.device))
        if row is None:
            return
        if row["state"] == "pending":
            self._deleted_alerts.add(row["id"])
            return
        row["state"] = "resolved"
        row["resolved_ms"] = max(t, row["started_ms"])
        if value is not None:
            row["value"] = self._round(rule, value)
        self._notify("resolved", row, row["resolved_ms"], external=bool(row["notified"]))

    def _new_alert(self, rule: Rule, dev: _Device, st: _RState, started: int, res: _Result, *, severity: str,
                   state: str, occurrence: int, message: Text | None = None, action: Text | None = None) -> dict[str, Any]:
        aid = alert_id(rule.id, dev.device, started)
        value = self._round(rule, res.value)
        threshold = self._round(rule, res.threshold)
        zh, en = self._render(rule, dev, message or rule.message, action or rule.action, value, threshold, occurrence)
        row = {"id": aid, "rule": rule.id, "kind": dev.kind, "site": dev.site, "device": dev.device,
               "field": rule.primary_field, "severity": severity, "state": state, "acked": 0,
               "acked_by": None, "acked_ms": None, "ack_note": None, "value": value, "threshold": threshold,
               "started_ms": started, "fired_ms": None, "resolved_ms": None, "message": zh, "message_en": en,
               "notified": 0, "escalated": 0, "last_notified_ms": None, "occurrence": occurrence, "count": 1,
               "updated_ms": self._wall_ms()}
        self._active[aid] = row
        self._touch(row)
        return row

    # ------------------------------------------------------------------ messages
    def _unit(self, rule: Rule) -> str:
        if rule.unit is not None:
            return rule.unit
        spec = self._kinds.get(rule.kind)
        f = rule.primary_field
        if spec is None or f is None:
            return ""
        if isinstance(rule, EventRule):
            attrs = spec.events.get(rule.event, {})
            return attrs[f].unit if f in attrs else ""
        return spec.fields[f].unit if f in spec.fields else ""

    @staticmethod
    def _round(rule: Rule, v: Any) -> Any:
        if v is None or isinstance(v, bool):
            return v
        return round(float(v), rule.decimals)

    @staticmethod
    def _fmt(v: Any, decimals: int, zh: bool) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return ("是" if v else "否") if zh else ("true" if v else "false")
        return f"{float(v):.{decimals}f}"

    @classmethod
    def _fmt_limit(cls, v: Any, decimals: int, zh: bool) -> str:
        text = cls._fmt(v, decimals, zh)
        return text.rstrip("0").rstrip(".") if isinstance(v, float) and "." in text else text

    @staticmethod
    def _duration(seconds: float, zh: bool) -> str:
        if seconds >= 3600 and seconds % 3600 == 0:
            return f"{int(seconds // 3600)}小时" if zh else f"{int(seconds // 3600)} h"
        return f"{round(seconds / 60)}分钟" if zh else f"{round(seconds / 60)} min"

    def _render(self, rule: Rule, dev: _Device, message: Text, action: Text, value: Any, threshold: Any,
                count: int) -> tuple[str, str]:
        window = getattr(rule, "window", None) or getattr(rule, "for_", 0.0) or 0.0
        out = []
        for lang in ("zh", "en"):
            zh = lang == "zh"
            ctx = {"value": self._fmt(value, rule.decimals, zh), "unit": self._unit(rule),
                   "limit": self._fmt_limit(threshold, rule.decimals, zh), "site": dev.site, "device": dev.device,
                   "field": rule.primary_field or "", "rule": rule.id, "count": count, "kind": dev.kind,
                   "duration": self._duration(window, zh)}
            act = getattr(action, lang).format_map(ctx)
            out.append(getattr(message, lang).format_map({**ctx, "action": act}))
        return out[0], out[1]

    # ------------------------------------------------------------------ notifications
    def payload(self, row: dict[str, Any]) -> dict[str, Any]:
        """The CONTRACT §3 alert payload (plus a few documented extras)."""
        return {
            "id": row["id"], "rule": row["rule"], "severity": row["severity"], "state": row["state"],
            "acked": bool(row["acked"]), "kind": row["kind"], "site": row["site"], "device": row["device"],
            "field": row["field"], "value": row["value"], "threshold": _plain(row["threshold"]),
            "started_at": self._iso(row["started_ms"]), "resolved_at": self._iso(row["resolved_ms"]),
            "message": row["message"], "message_en": row["message_en"],
            # extras beyond the contract
            "fired_at": self._iso(row["fired_ms"]), "acked_by": row["acked_by"], "acked_at": self._iso(row["acked_ms"]),
            "ack_note": row["ack_note"], "occurrence": row["occurrence"], "count": row["count"],
        }

    def _touch(self, row: dict[str, Any]) -> None:
        row["updated_ms"] = self._wall_ms()
        self._dirty_alerts[row["id"]] = row

    def _notify(self, event: str, row: dict[str, Any], t: int, *, external: bool) -> None:
        self._touch(row)
        payload = self.payload(row)
        for n in self._notifiers:
            if external or n.name == "history":
                self._outbox.append((n.name, event, row["id"], payload, t))
        self._publish_live(event, row, payload)
        self.stats["notifications"] += 1

    def _publish_live(self, event: str, row: dict[str, Any], payload: dict[str, Any] | None = None) -> None:
        self._hub_seq += 1
        self._live.append(Notification(self._hub_seq, event, payload or self.payload(row), self._wall_ms()))

    def _flush(self) -> None:
        """Commit everything this batch changed in one transaction, then wake delivery."""
        if not (self._dirty_alerts or self._deleted_alerts or self._dirty_rstate or self._outbox):
            self._emit_live()
            return
        with self.store.transaction() as tx:
            for aid in self._deleted_alerts:
                if aid not in self._dirty_alerts:
                    tx.delete_alert(aid)
            for row in self._dirty_alerts.values():
                tx.upsert_alert({**row, "value": json.dumps(row["value"]), "threshold": json.dumps(row["threshold"])})
            for key in self._dirty_rstate:
                st = self._rstate.get(key)
                if st is not None and st.is_idle():
                    self._rstate.pop(key, None)
                    states = self._device_states.get(key[1])
                    if states is not None:
                        states.pop(key[0], None)
                        if not states:
                            del self._device_states[key[1]]
                    st = None
                tx.put_rstate(key[0], key[1], asdict(st) if st is not None else None)
            for name, event, aid, payload, t in self._outbox:
                tx.enqueue(name, event, aid, payload, t)
        had_outbox = bool(self._outbox)
        self._dirty_alerts, self._deleted_alerts, self._dirty_rstate, self._outbox = {}, set(), set(), []
        if had_outbox:
            self._wake()
        self._emit_live()

    def _emit_live(self) -> None:
        live, self._live = self._live, []
        for n in live:
            self._hub.publish(n)

    def _wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def wake_all() -> None:
            for d in self._dispatchers:
                d.wake.set()

        try:
            if asyncio.get_running_loop() is loop:
                wake_all()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(wake_all)

    def subscribe_notifications(self) -> HubSubscription:
        """Live notifications (every state change, including pending) for the API's SSE."""
        return self._hub.subscribe()

    # ------------------------------------------------------------------ silences
    def _silenced(self, row: dict[str, Any], now: int) -> bool:
        for s in self._silences:
            if s["starts_ms"] <= now < s["ends_ms"] and all(
                    s[k] is None or s[k] == row[k] for k in ("site", "device", "rule")):
                return True
        return False

    def silence(self, *, by: str, ends_at: float | datetime, starts_at: float | datetime | None = None,
                site: str | None = None, device: str | None = None, rule: str | None = None,
                comment: str = "") -> dict[str, Any]:
        """A time-bounded silence / maintenance window for a site, device and/or rule.
        Alerts still change state (and are recorded), but no external notification goes
        out while silenced; a still-firing alert is notified when the silence ends."""
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
        with self._mu:
            self.store.execute("INSERT INTO silences (id, site, device, rule, starts_ms, ends_ms, created_by, "
                               "comment, created_ms) VALUES (:id,:site,:device,:rule,:starts_ms,:ends_ms,"
                               ":created_by,:comment,:created_ms)", s)
            self._silences.append(s)
        return self._silence_view(s)

    def unsilence(self, silence_id: str) -> None:
        with self._mu:
            now = self._wall_ms()
            for s in self._silences:
                if s["id"] == silence_id:
                    s["ends_ms"] = min(s["ends_ms"], now)
                    self.store.execute("UPDATE silences SET ends_ms=? WHERE id=?", (s["ends_ms"], silence_id))
                    return
        raise AlertNotFound(f"no silence {silence_id}")

    def list_silences(self, *, active_only: bool = True) -> list[dict[str, Any]]:
        now = self._wall_ms()
        return [self._silence_view(s) for s in self._silences if not active_only or s["ends_ms"] > now]

    def _silence_view(self, s: dict[str, Any]) -> dict[str, Any]:
        return {"id": s["id"], "site": s["site"], "device": s["device"], "rule": s["rule"],
                "starts_at": self._iso(s["starts_ms"]), "ends_at": self._iso(s["ends_ms"]),
                "created_by": s["created_by"], "comment": s["comment"]}

    # ------------------------------------------------------------------ API queries
    def _row(self, r: Any) -> dict[str, Any]:
        row = dict(r)
        row["value"] = json.loads(row["value"]) if row["value"] is not None else None
        row["threshold"] = json.loads(row["threshold"]) if row["threshold"] is not None else None
        return row

    def list_alerts(self, *, state: str | None = None, site: str | None = None, severity: str | None = None,
                    device: str | None = None, rule: str | None = None, limit: int = 100,
                    offset: int = 0) -> list[dict[str, Any]]:
        """Newest first. `state` is pending | firing | resolved | active (pending+firing)."""
        where, args = [], []
        if state == "active":
            where.append("state IN ('pending','firing')")
        elif state:
            where.append("state=?")
            args.append(state)
        for col, val in (("site", site), ("severity", severity), ("device", device), ("rule", rule)):
            if val:
                where.append(f"{col}=?")
                args.append(val)
        sql = "SELECT * FROM alerts" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_ms DESC, id LIMIT ? OFFSET ?"
        args += [max(0, min(int(limit), 10000)), max(0, int(offset))]
        return [self.payload(self._row(r)) for r in self.store.query(sql, args)]

    def get(self, alert_id: str) -> dict[str, Any] | None:
        rows = self.store.query("SELECT * FROM alerts WHERE id=?", (alert_id,))
        return self.payload(self._row(rows[0])) if rows else None

    def ack(self, alert_id: str, *, by: str, note: str = "") -> dict[str, Any]:
        """Acknowledge (idempotent). Stops re-notification and escalation of this alert."""
        with self._mu:
            row = self._active.get(alert_id)
            if row is None:
                rows = self.store.query("SELECT * FROM alerts WHERE id=?", (alert_id,))
                if not rows:
                    raise AlertNotFound(f"no alert {alert_id}")
                row = self._row(rows[0])
            if row["acked"]:
                return self.payload(row)
            row.update(acked=1, acked_by=by, acked_ms=self._wall_ms(), ack_note=note)
            external = bool(row["notified"]) and not self._silenced(row, self.now_ms())
            if row["state"] == "pending":
                self._touch(row)
            else:
                self._notify("acked", row, self._wall_ms(), external=external)
            self._flush()
            return self.payload(row)

    def backlog(self) -> dict[str, int]:
        return self.store.outbox_backlog()

    # ------------------------------------------------------------------ timer
    def tick(self) -> None:
        """Timer-driven evaluation (deadman, expiry, escalation, re-notify, silences)."""
        with self._mu:
            now = self.now_ms()
            self._tick_deadman(now)
            for aid, row in list(self._active.items()):
                rule = self.rules.get(row["rule"])
                dev = self._devices.get(row["device"])
                if rule is None or dev is None:
                    continue
                st = self._state(rule.id, dev.device)
                if row["state"] != "firing":
                    continue
                keep = getattr(rule, "keep_firing_for", None)
                if isinstance(rule, ThresholdRule) and st.clear_since is not None and keep is not None \
                        and now - st.clear_since >= keep * 1000:
                    self._resolve(rule, dev, st, max(now, st.clear_since), value=None)
                    continue
                if isinstance(rule, EventRule) and st.last_violation is not None \
                        and now - st.last_violation >= rule.resolve_after * 1000:
                    self._resolve(rule, dev, st, now, value=None)
                    continue
                if isinstance(rule, DailyRatioRule) and st.ratio_day and self._local_day(now) > st.ratio_day:
                    self._resolve(rule, dev, st, now, value=None)
                    continue
                silenced = self._silenced(row, now)
                if not row["notified"]:
                    if not silenced:
                        row["notified"], row["last_notified_ms"] = 1, now
                        self._notify("firing", row, now, external=True)
                    continue
                if row["acked"] or silenced:
                    continue
                # "Unacknowledged for N minutes" counts from when people were told, on the
                # timer's clock: fired_ms is event time, which in a replay of the past lies
                # hours behind the wall clock and would escalate at once.
                if rule.escalate_after is not None and not row["escalated"] and row["last_notified_ms"] is not None \
                        and now - row["last_notified_ms"] >= rule.escalate_after * 1000:
                    row["escalated"] = 1
                    row["severity"] = rule.escalate_to or _NEXT_SEVERITY[row["severity"]]
                    row["last_notified_ms"] = now
                    self._notify("escalated", row, now, external=True)
                    continue
                repeat = (rule.repeat_interval * 1000) if rule.repeat_interval else self._repeat_ms
                if row["last_notified_ms"] is not None and now - row["last_notified_ms"] >= repeat:
                    row["last_notified_ms"] = now
                    self._notify("repeat", row, now, external=True)
            self._flush()

    def _tick_deadman(self, now: int) -> None:
        if not self._deadman:
            return
        if self._registry is not None:
            for d in getattr(self._registry, "devices", {}).values():
                if d.kind in self._deadman and d.id not in self._devices:
                    # Registered but never heard from: the silence counts from now.
                    self._devices[d.id] = _Device(d.kind, d.site, d.id, last_seen=now)
        for dev in list(self._devices.values()):
            rules = self._deadman.get(dev.kind)
            if not rules:
                continue
            silent_s = max(0.0, (now - dev.last_seen) / 1000.0)
            for rule in rules:
                interval = self._device_interval(dev.device, dev.kind) or rule.default_interval
                limit = rule.factor * interval
                active = silent_s > limit
                st = self._rstate.get((rule.id, dev.device))
                firing = st is not None and st.alert_id in self._active
                if active and not firing:
                    self._step(rule, dev, now, _Result(True, silent_s, limit), still=True, keep_s=0.0)
                elif firing and not active:
                    assert st is not None
                    self._resolve(rule, dev, st, now, value=silent_s)

    def snapshot(self) -> None:
        """Persist device watermarks and window contents (periodically and on close).

        The rows are taken under the engine lock, but written without it: the periodic
        snapshot runs on a worker thread (`_timer`) and its SQLite transaction (hundreds of
        rows and an fsync, 20-50 ms with a few hundred devices) no longer holds up the
        evaluation of new readings. `_snapshot_lock` keeps snapshots in order, so an older
        one can never overwrite a newer one (the last, on close, included)."""
        with self._snapshot_lock:
            rows: list[tuple[str, tuple]] = []
            with self._mu:
                for d in self._devices.values():
                    if not (d.meta_dirty or d.dirty):
                        continue
                    if d.meta_dirty:
                        rows.append(("INSERT OR REPLACE INTO devices (device, kind, site, watermark_ms, last_seen_ms) "
                                     "VALUES (?,?,?,?,?)", (d.device, d.kind, d.site, d.watermark, d.last_seen)))
                        d.meta_dirty = False
                    for f in d.dirty:
                        ts, v = d.series[f].dump()
                        rows.append(("INSERT OR REPLACE INTO series (device, field, ts, v) VALUES (?,?,?,?)",
                                     (d.device, f, ts, v)))
                    d.dirty = ()
            if not rows:
                return
            with self.store.transaction() as tx:
                for sql, args in rows:
                    tx.execute(sql, args)

    # ------------------------------------------------------------------ running
    async def run(self, source: Any = None) -> None:
        """Consume Batches from a ValidatedStream / Subscription / async iterable and run
        the timer and the delivery stages, until cancelled."""
        self._loop = asyncio.get_running_loop()
        for d in self._dispatchers:
            d.wake = asyncio.Event()  # bound to this loop
        sub = source.subscribe() if hasattr(source, "subscribe") else source
        try:
            async with asyncio.TaskGroup() as tg:
                for d in self._dispatchers:
                    d.wake.set()
                    tg.create_task(d.run(), name=f"alerts-deliver-{d.notifier.name}")
                tg.create_task(self._timer(), name="alerts-timer")
                if sub is not None:
                    tg.create_task(self._consume(sub), name="alerts-consume")
        finally:
            self.snapshot()
            if sub is not None and hasattr(sub, "close"):
                sub.close()

    async def _consume(self, sub: AsyncIterable[Any]) -> None:
        async for batch in sub:
            self.process(batch)
            await asyncio.sleep(0)

    async def _timer(self) -> None:
        last_snapshot = last_prune = time.monotonic()
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                self.tick()
                mono = time.monotonic()
                if mono - last_snapshot >= self._snapshot_s:
                    await asyncio.to_thread(self.snapshot)
                    last_snapshot = mono
                if mono - last_prune >= 3600:
                    self.store.prune(self._wall_ms() - self._retention_ms)
                    last_prune = mono
            except Exception:  # keep the timer alive; the error is logged with its traceback
                log.exception("alert timer failed")

    async def drain(self, timeout: float = 10.0) -> bool:
        """Deliver queued notifications now (tests, shutdown); True when the outbox is empty."""
        self._loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(self.store.outbox_backlog().values()):
                return True
            progressed = False
            for d in self._dispatchers:
                row = self.store.next_outbox(d.notifier.name)
                if row is not None and row.next_ms <= self._wall_ms():
                    await d.step()
                    progressed = True
            if not progressed:
                await asyncio.sleep(0.02)
        return not any(self.store.outbox_backlog().values())

    async def aclose(self) -> None:
        self.snapshot()
        for n in self._notifiers:
            close = getattr(n, "aclose", None) or getattr(n, "close", None)
            if close is not None:
                r = close()
                if asyncio.iscoroutine(r):
                    await r
        self.store.close()

    def close(self) -> None:
        self.snapshot()
        self.store.close()
