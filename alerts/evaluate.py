"""The rule kinds evaluated: threshold and stuck rules (called per reading by the engine's
`_reading`, after the guards), event and daily-ratio rules (per event), deadman rules (per
timer tick). Each turns what its rule says about a device now into a `Result` and hands
it to the lifecycle (`_step`, `_fire`, `_resolve`, alerts/lifecycle.py).

`RuleKinds` is a part of `AlertEngine` (a base class, so the per-reading calls cost what
they did as the engine's own methods). It uses the engine's: `rules` indexes
(`_by_event`, `_deadman`), devices (`_devices`, `_device`, `_seen`, `_device_interval`),
`_registry`, conditions (`_cond`, `_all_hold`, `_conds`), schedules
(`_schedule_active`, `_local_day`), lifecycle state and transitions (`_rstate`,
`_active`, `_life`, `_state`, `_step`, `_fire`, `_resolve`, `_touch`) and `stats`.
"""

from __future__ import annotations

from typing import Any

from citywatch.model import Event

from alerts.conditions import Result
from alerts.messages import round_value as _round
from alerts.plan import CompiledRule, Device
from alerts.rules import DailyRatioRule, EventRule, StuckRule, ThresholdRule


class RuleKinds:
    _by_event: Any
    _deadman: Any
    _devices: Any
    _registry: Any
    _rstate: Any
    _active: Any
    _life: Any
    stats: Any

    def _eval_threshold(self, cr: CompiledRule, dev: Device, t: int) -> None:
        rule: ThresholdRule = cr.rule  # type: ignore[assignment]
        schedule = cr.schedule
        if schedule and not self._schedule_active(schedule, t):
            st = self._rstate.get((rule.id, dev.device))
            if st is not None and (st.alert_id or st.pending_since is not None):
                # Out of its schedule the rule does not hold: drop pending, resolve firing.
                self._step(rule, dev, t, Result(False), still=False, keep_s=0.0)
            return
        when = cr.when
        if len(when) == 1:
            active, value, thr = self._cond(when[0], dev, t, 0.0, schedule)
        else:
            active, value, thr = self._all_hold(when, dev, t, 0.0, schedule)
        if active is None:
            return
        st = self._rstate.get((rule.id, dev.device))
        if not active and (st is None or (st.alert_id is None and st.pending_since is None and not st.consecutive)):
            return  # idle and the condition does not hold: `_step` would change nothing
        if cr.approx:  # something may happen: the values that go into alerts are numpy's
            active, value, thr = self._all_hold(when, dev, t, 0.0, schedule, True)
            if active is None:
                return
        still: bool | None = active
        if st is not None and st.alert_id and (cr.clear or rule.hysteresis):
            # `still` only matters to a firing alert: evaluate clear / hysteresis just then
            alert = self._active.get(st.alert_id)
            if alert is not None and alert.state == "firing":
                if cr.clear:
                    clr = self._all_hold(cr.clear, dev, t, 0.0, schedule, True)[0]
                    still = None if clr is None else not clr
                else:
                    still = self._all_hold(cr.when, dev, t, rule.hysteresis, schedule, True)[0]
        self._step(rule, dev, t, Result(active, value, thr), still=still, keep_s=rule.keep_firing_for,
                   for_s=rule.for_, consecutive=rule.consecutive)

    def _eval_stuck(self, cr: CompiledRule, dev: Device, t: int) -> None:
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
        self._step(rule, dev, t, Result(flat, roll.value("last"), rule.tolerance), still=flat, keep_s=0.0)

    def _event(self, e: Event) -> None:
        self.stats["events"] += 1
        dev = self._device(e.kind, e.site, e.device)
        self._seen(dev, e.ts_ms)
        for rule in self._by_event.get((e.kind, e.type), ()):
            self.stats["evaluations"] += 1
            st = self._state(rule.id, dev.device)
            alert = self._active.get(st.alert_id) if st.alert_id else None
            if isinstance(rule, EventRule):
                results = [self._conds.attr(c, e.attributes, dev, e.ts_ms) for c in rule.when]
                if rule.match == "any":
                    hit = next((r for r in results if r.active), None)
                else:
                    hit = results[0] if results and all(r.active for r in results) else None
                if hit is not None:
                    st.last_violation = e.ts_ms
                    self._life.dirty_rstate.add((rule.id, dev.device))
                    if alert is not None:
                        alert.count += 1
                        alert.value = _round(rule, hit.value)
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
                if all(self._conds.attr(c, e.attributes, dev, e.ts_ms).active is not False for c in rule.numerator):
                    st.num += 1
                self._life.dirty_rstate.add((rule.id, dev.device))
                ratio = 100.0 * st.num / st.den
                limit = self._conds.threshold(rule.below, dev, e.ts_ms, None)
                active = limit is not None and st.den >= rule.min_events and ratio < limit
                res = Result(active, ratio, limit)
                if alert is not None:
                    if active:
                        alert.value = _round(rule, ratio)
                        self._touch(alert)
                    else:
                        self._resolve(rule, dev, st, e.ts_ms, value=ratio)
                elif active:
                    self._fire(rule, dev, st, e.ts_ms, res)

    def _tick_deadman(self, now: int) -> None:
        if not self._deadman:
            return
        if self._registry is not None:
            for d in getattr(self._registry, "devices", {}).values():
                if d.kind in self._deadman and d.id not in self._devices:
                    # Registered but never heard from: the silence counts from now.
                    self._devices[d.id] = Device(d.kind, d.site, d.id, last_seen=now)
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
                    self._step(rule, dev, now, Result(True, silent_s, limit), still=True, keep_s=0.0)
                elif firing and not active:
                    assert st is not None
                    self._resolve(rule, dev, st, now, value=silent_s)
