"""The alert engine: validated readings/events in, alert lifecycle and notifications out.
A coordinator: it owns the devices and the per-reading path (`_reading`) and wires the
parts (see alerts/README.md for the module map).

Evaluation is in event time (each reading's `ts_ms`): a device's rules are evaluated at
its watermark (the newest reading seen). A late reading within `late_tolerance_s` still
goes into the windows (so the next evaluation sees it) but does not move time backwards;
an older one is counted and ignored. The timer (`tick`) drives what no message can:
deadman, keep_firing_for expiry, event auto-resolve, escalation, re-notify and silence
expiry; its clock is wall time, or in event-time replays the newest event time seen.
Every transition and its outbox rows are committed in one SQLite transaction at the end of
each batch (alerts/lifecycle.py, alerts/store.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from citywatch.errors import CitywatchError
from citywatch.model import VALID_FLAGS, Event, Reading
from citywatch.registry import Registry
from citywatch.schema import kinds as load_kinds

from alerts.buckets import BUCKET_MS, group_chunks, new_series, restore_series
from alerts.conditions import Conditions
from alerts.config import EngineConfig
from alerts.errors import AlertError, AlertNotFound
from alerts.evaluate import RuleKinds
from alerts.guard import NEVER
from alerts.lifecycle import Alert, Lifecycle
from alerts.messages import Renderer
from alerts.notify import HubSubscription, NotificationHub, Notifier, OutboxDispatcher, SinkNotifier
from alerts.plan import (CompiledRule, Device, WatchPlan, compile_rules, union_fields,
                         watch_device)
from alerts.rules import Rule, load_rules, parse_rule, rule_to_dict
from alerts.schedule import LocalTime
from alerts.silences import Silences
from alerts.snapshots import Snapshots
from alerts.store import AlertStore
from alerts.timer import Timer
from alerts.window import Series

log = logging.getLogger("citywatch.alerts")

Clock = Callable[[], float]


class AlertEngine(RuleKinds):
    """See the module docstring. `AlertEngine(config, rules=..., notifiers=...)`; `await run(stream)`.

    `rules`: a rule set (by id, or a list); None loads the shipped packs plus
    `config.rules_dir`. `registry`: the device registry (expected intervals, parameters)."""

    def __init__(self, config: EngineConfig, *, rules: dict[str, Rule] | Iterable[Rule] | None = None,
                 registry: Any = None, notifiers: Sequence[Notifier] = (), sink: Any = None,
                 clock: Clock = time.time):
        if rules is None:
            rules = load_rules(config.rules_dir)
        self.config = config
        self._clock = clock
        self._time_mode = config.time_mode
        self._time = LocalTime(ZoneInfo(config.tz))
        # bound once: asked per reading
        self._local_day, self._iso = self._time.local_day, self._time.iso
        self._schedule_active, self._period_start = self._time.schedule_active, self._time.period_start
        self._registry = registry
        self._late_ms = int(config.late_tolerance_s * 1000)
        self._repeat_ms = int(config.repeat_interval_s * 1000)
        self._max_samples = config.max_samples_per_series
        self._default_interval_s = config.default_interval_s
        self._retention_ms = int(config.retention_days * 86400_000)
        self._conds = Conditions(self._params, self._period_start)
        self._cond, self._all_hold = self._conds.cond, self._conds.all_hold  # bound once: per reading
        self._renderer = Renderer(load_kinds())
        self.store = AlertStore(config.state_path)
        self._mu = threading.RLock()
        self._hub = NotificationHub()
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
        self._dispatchers = [OutboxDispatcher(self.store, n, clock=clock, backoff=config.backoff)
                             for n in notifiers]

        rule_map = dict(rules) if isinstance(rules, dict) else {r.id: r for r in rules}
        for doc in self.store.load_rule_overrides():
            try:
                r = parse_rule(json.loads(doc), "rule override")
                rule_map[r.id] = r
            except CitywatchError as exc:
                log.error("ignoring stored rule override: %s", exc)
        self._install_rules(rule_map)

        self._timer = Timer(store=self.store, dispatchers=self._dispatchers, tick=self.tick, snapshot=self.snapshot,
                            prune=self._prune, process=self.process, wall_ms=self._wall_ms,
                            tick_s=config.tick_interval_s, snapshot_s=config.snapshot_interval_s)
        self.store.on_resumed = self._timer.wake  # writes held on a full disk are stored: deliver their notifications
        self._silences = Silences(self.store, self._wall_ms, self._iso)
        self._silenced = self._silences.silenced
        self._life = Lifecycle(store=self.store, notifiers=self._notifiers, renderer=self._renderer, hub=self._hub,
                               silenced=self._silenced, now_ms=self.now_ms, wall_ms=self._wall_ms,
                               local_day=self._local_day, iso=self._iso, wake=self._timer.wake, stats=self.stats)
        # The lifecycle's state and transitions, bound once (the evaluation reads them per reading).
        life = self._life
        self._rstate, self._device_states, self._active = life.rstate, life.device_states, life.active
        self._state, self._step, self._fire, self._resolve = life.state, life.step, life.fire, life.resolve
        self._touch, self._notify, self._flush = life.touch, life.notify, life.flush
        self._load_state()
        self.snapshots = Snapshots(self.store, self._mu, lambda: self._devices, self.stats)

    # ------------------------------------------------------------------ rules and index
    def _install_rules(self, rules: dict[str, Rule]) -> None:
        """Build the lookup indexes (alerts/plan.py), then swap them in at once."""
        index = compile_rules(rules)
        self.rules = index.rules
        self._by_event, self._deadman = index.by_event, index.deadman
        self._windows, self._long_windows = index.windows, index.long_windows
        self._field_index, self._kind_rules = index.field_index, index.kind_rules
        self._rules_gen = getattr(self, "_rules_gen", 0) + 1  # devices rebuild their guards
        self._todo: dict[tuple[str, tuple[str, ...]], list[CompiledRule]] = {}
        self._shapes: dict[tuple[str, str, float | None], tuple[int, int, int]] = {}  # see _series_shape
        self._guard_params = index.guard_params  # for _watch_plan
        self._watch_plans: dict[tuple[str, tuple[Any, ...]], WatchPlan] = {}
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
            self.store.put_rule_override(rule.id, json.dumps(rule_to_dict(rule), ensure_ascii=False), self._wall_ms())
        return rule_to_dict(rule)

    # ------------------------------------------------------------------ state loading
    def _load_state(self) -> None:
        self._devices: dict[str, Device] = {}
        for d in self.store.load_devices():
            self._devices[d["device"]] = Device(d["kind"], d["site"], d["device"], d["watermark_ms"],
                                                 d["last_seen_ms"], meta_dirty=False)
            self._event_now = max(self._event_now, d["watermark_ms"])
        chunks = group_chunks(self.store.load_series_buckets())
        for s in self.store.load_series():
            dev = self._devices.get(s["device"])
            if dev is not None:
                shape = self._series_shape(dev, s["field"])
                if shape[0]:  # a field no rule reads any more is not restored
                    dev.series[s["field"]] = restore_series(shape, s["ts"], s["v"], self._max_samples,
                                                            chunks.pop((s["device"], s["field"]), []))
        self.store.drop_series_buckets(chunks)  # of fields no longer read by a long window

    # ------------------------------------------------------------------ time helpers
    def _wall_ms(self) -> int:
        return int(self._clock() * 1000)

    def now_ms(self) -> int:
        """The timer's 'now': wall clock, or in event mode the newest event time seen."""
        if self._time_mode == "event":
            return self._event_now if self._event_now >= 0 else self._wall_ms()
        return self._wall_ms()

    # ------------------------------------------------------------------ devices
    def _device_interval(self, device: str, kind: str) -> float | None:
        d = self._registry.get(device) if self._registry is not None else None
        return d.expected_interval_s if d is not None else None

    def _params(self, device: str) -> dict[str, Any]:
        d = self._registry.get(device) if self._registry is not None else None
        return d.params if d is not None else {}

    def _series_shape(self, dev: Device, fld: str) -> tuple[int, int, int]:
        """(starting capacity, longest raw window ms, longest minute-bucket window ms) of the
        device's series for `fld`; (0, 0, 0) when no rule reads it. Depends only on the kind, the
        field and the device's expected interval: worked out once for them (the ints are shared)."""
        interval = self._device_interval(dev.device, dev.kind)
        key = (dev.kind, fld, interval)
        shape = self._shapes.get(key)
        if shape is None:
            window = self._windows.get((dev.kind, fld))
            long = self._long_windows.get((dev.kind, fld), 0.0)
            if window is None:
                shape = (0, 0, 0)
            else:
                window = max(window, (self._late_ms + BUCKET_MS) / 1000 if long else 0)  # late ones meet raw
                per = interval or self._default_interval_s
                cap = int(min(self._max_samples, max(16, math.ceil(window / per * 1.25) + 8)))
                shape = (cap, int(window * 1000), int(long * 1000))
            if len(self._shapes) >= 4096:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def _new_series(self, dev: Device, fld: str) -> Series:
        # Starts sized for the expected interval; grows (up to the cap) if the device
        # reports faster than expected, so the longest window always fits.
        return new_series(self._series_shape(dev, fld), self._max_samples)

    def _device(self, kind: str, site: str, device: str) -> Device:
        dev = self._devices.get(device)
        if dev is None or dev.kind != kind or dev.site != site:
            dev = Device(kind, site, device)
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

    def _seen(self, dev: Device, ts_ms: int) -> None:
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
        """The per-reading hot path: device and time, each value into its field's feed
        (series and guard trackers), then the rules those fields index. Which values are
        never judged (quality flags) is decided in the `for f, v` loop, before a value
        enters a series: per-value filtering belongs there."""
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
                if f not in feeds or (quality and quality.get(f, "N") not in VALID_FLAGS):  # flagged: never judged
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
                dev.dirty = union_fields(dev.dirty, fields)
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

    def _watch(self, dev: Device, regdev: Any) -> None:
        """(Re)build the device's feeds and guards for the current rules and its registry entry."""
        plan = self._watch_plan(dev.kind, regdev.params if regdev is not None else {})
        watch_device(dev, plan, self._field_index.get(dev.kind, ()), self._rules_gen, regdev)

    def _watch_plan(self, kind: str, params: dict[str, Any]) -> WatchPlan:
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
            return WatchPlan(self._kind_rules.get(kind, ()), params)
        if plan is None:
            plan = WatchPlan(self._kind_rules.get(kind, ()), params)
            if len(self._watch_plans) >= 4096:
                self._watch_plans.clear()
            self._watch_plans[key] = plan
        return plan

    def _plan(self, key: tuple[str, tuple[str, ...]]) -> list[CompiledRule]:
        """The rules a reading with these (rule-indexed) fields evaluates, in index order."""
        index = self._field_index[key[0]]
        todo: dict[str, CompiledRule] = {}
        for f in key[1]:
            for cr in index[f]:
                todo.setdefault(cr.id, cr)
        if len(self._todo) >= 4096:
            self._todo.clear()
        out = self._todo[key] = list(todo.values())
        return out

    def subscribe_notifications(self) -> HubSubscription:
        """Live notifications (every state change, including pending) for the API's SSE."""
        return self._hub.subscribe()

    # ------------------------------------------------------------------ silences
    def silence(self, *, by: str, ends_at: float | datetime, starts_at: float | datetime | None = None,
                site: str | None = None, device: str | None = None, rule: str | None = None,
                comment: str = "") -> dict[str, Any]:
        """A time-bounded silence / maintenance window for a site, device and/or rule.
        Alerts still change state (and are recorded), but no external notification goes
        out while silenced; a still-firing alert is notified when the silence ends."""
        with self._mu:
            return self._silences.add(by=by, ends_at=ends_at, starts_at=starts_at, site=site, device=device,
                                      rule=rule, comment=comment)

    def unsilence(self, silence_id: str) -> None:
        with self._mu:
            self._silences.end(silence_id)

    def list_silences(self, *, active_only: bool = True) -> list[dict[str, Any]]:
        return self._silences.list(active_only=active_only)

    # ------------------------------------------------------------------ API queries
    def _payload(self, row: dict[str, Any]) -> dict[str, Any]:
        return Alert.from_row(row).to_payload(self._iso)

    def list_alerts(self, *, state: str | None = None, site: str | None = None, severity: str | None = None,
                    device: str | None = None, rule: str | None = None, limit: int = 100,
                    offset: int = 0, sites: Collection[str] | None = None) -> list[dict[str, Any]]:
        """Newest first. `state` is pending | firing | resolved | active (pending+firing).
        `sites` keeps only alerts of these sites (an API token's districts; empty: none)."""
        return [self._payload(r) for r in self.store.list_alerts(state=state, site=site, severity=severity,
                                                                device=device, rule=rule, limit=limit,
                                                                offset=offset, sites=sites)]

    def get(self, alert_id: str) -> dict[str, Any] | None:
        row = self.store.get_alert(alert_id)
        return self._payload(row) if row is not None else None

    def ack(self, alert_id: str, *, by: str, note: str = "") -> dict[str, Any]:
        """Acknowledge (idempotent). Stops re-notification and escalation of this alert."""
        with self._mu:
            return self._life.ack(alert_id, by=by, note=note)

    def backlog(self) -> dict[str, int]:
        return self.store.outbox_backlog()

    # ------------------------------------------------------------------ timer
    def tick(self) -> None:
        """Timer-driven evaluation (deadman, expiry, escalation, re-notify, silences)."""
        with self._mu:
            now = self.now_ms()
            self._tick_deadman(now)
            self._life.on_timer(now, self.rules, self._devices, self._repeat_ms)
            self._flush()

    def snapshot(self, *, force: bool = False) -> None:
        """Persist device watermarks and window contents (periodically and on close);
        deferred on a nearly full disk (alerts/snapshots.py)."""
        self.snapshots.write(force=force)

    def _prune(self) -> None:
        self.store.prune(self._wall_ms() - self._retention_ms)

    # ------------------------------------------------------------------ running (alerts/timer.py)
    async def run(self, source: Any = None) -> None:
        """Consume Batches from a ValidatedStream / Subscription / async iterable and run
        the timer and the delivery stages, until cancelled."""
        await self._timer.run(source)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Deliver queued notifications now (tests, shutdown); True when the outbox is empty."""
        return await self._timer.drain(timeout)

    async def aclose(self) -> None:
        self.snapshot(force=True)
        for n in self._notifiers:
            close = getattr(n, "aclose", None) or getattr(n, "close", None)
            if close is not None:
                r = close()
                if asyncio.iscoroutine(r):
                    await r
        self.store.close()

    def close(self) -> None:
        self.snapshot(force=True)
        self.store.close()
