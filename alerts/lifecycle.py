"""Alert lifecycle per (rule, device): inactive → pending → firing → resolved, `acked`
orthogonal; the typed `Alert`, the per-rule evaluation state, and the pending transaction.

`step` is the state machine every rule kind feeds with a `Result`; `fire` and `resolve`
make the transitions and queue their notifications (one outbox row per notifier, the
live hub). Nothing is written until `flush`, which commits every alert, rule state and
outbox row the batch changed in one SQLite transaction (alerts/store.py), so a restart
neither repeats a notification nor forgets a pending start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from alerts.conditions import Result
from alerts.errors import AlertNotFound
from alerts.messages import Renderer, plain
from alerts.messages import round_value as _round
from alerts.notify import Notification, NotificationHub, Notifier
from alerts.plan import Device
from alerts.rules import SEVERITIES, DailyRatioRule, EventRule, Rule, Text, ThresholdRule
from alerts.store import ALERT_COLUMNS, AlertStore

_NEXT_SEVERITY = {s: SEVERITIES[min(i + 1, len(SEVERITIES) - 1)] for i, s in enumerate(SEVERITIES)}


@dataclass(slots=True, eq=False)
class Alert:
    """One alert, active or resolved: a row of the `alerts` table (same columns)."""

    id: str  # alert_id(rule, device, started_ms)
    rule: str
    kind: str
    site: str
    device: str
    field: str | None
    severity: str
    state: str  # pending | firing | resolved
    acked: int = 0
    acked_by: str | None = None
    acked_ms: int | None = None
    ack_note: str | None = None
    value: Any = None  # a number, a bool (`is:` conditions) or None
    threshold: Any = None
    started_ms: int = 0  # when the condition started (Prometheus' activeAt)
    fired_ms: int | None = None
    resolved_ms: int | None = None
    message: str = ""
    message_en: str = ""
    notified: int = 0  # people were told it fires (not while silenced)
    escalated: int = 0
    last_notified_ms: int | None = None  # on the timer's clock: escalation and repeat count from it
    occurrence: int = 1  # the episode of the local day
    count: int = 1  # events that broke an event rule while it fired
    updated_ms: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Alert":
        return cls(**{c: row[c] for c in ALERT_COLUMNS})

    def to_row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in ALERT_COLUMNS}

    def to_payload(self, iso: Callable[[int | None], str | None]) -> dict[str, Any]:
        """The docs/contract.md §3 alert payload (plus a few documented extras); `iso` formats times."""
        return {
            "id": self.id, "rule": self.rule, "severity": self.severity, "state": self.state,
            "acked": bool(self.acked), "kind": self.kind, "site": self.site, "device": self.device,
            "field": self.field, "value": self.value, "threshold": plain(self.threshold),
            "started_at": iso(self.started_ms), "resolved_at": iso(self.resolved_ms),
            "message": self.message, "message_en": self.message_en,
            # extras beyond the contract
            "fired_at": iso(self.fired_ms), "acked_by": self.acked_by, "acked_at": iso(self.acked_ms),
            "ack_note": self.ack_note, "occurrence": self.occurrence, "count": self.count,
        }


@dataclass
class RuleState:
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
    def from_json(cls, d: dict[str, Any]) -> "RuleState":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def is_idle(self) -> bool:
        return self == RuleState()


def alert_id(rule: str, device: str, started_ms: int) -> str:
    return hashlib.sha1(f"{rule}|{device}|{started_ms}".encode()).hexdigest()[:20]


class Lifecycle:
    """The active alerts and rule states, and the transaction a batch builds up. Its
    collaborators: `silenced(alert, now)`, the timer's `now_ms()`, `wall_ms()`, `local_day`
    and `iso` (alerts/schedule.py), `wake()` (delivery), and the engine's `stats`."""

    def __init__(self, *, store: AlertStore, notifiers: Sequence[Notifier], renderer: Renderer,
                 hub: NotificationHub, silenced: Callable[[Alert, int], bool], now_ms: Callable[[], int],
                 wall_ms: Callable[[], int], local_day: Callable[[int], str],
                 iso: Callable[[int | None], str | None], wake: Callable[[], None], stats: dict[str, int]):
        self.store = store
        self._notifiers = notifiers
        self._renderer = renderer
        self._hub = hub
        self._hub_seq = 0
        self._silenced = silenced
        self.now_ms = now_ms
        self._wall_ms = wall_ms
        self._local_day = local_day
        self._iso = iso
        self._wake = wake
        self.stats = stats
        self.rstate: dict[tuple[str, str], RuleState] = {
            k: RuleState.from_json(v) for k, v in store.load_rstate().items()}
        # The same states by device, then rule id: a reading finds its device's in one lookup
        # (most devices have none). Kept in step by `state` and `flush`.
        self.device_states: dict[str, dict[str, RuleState]] = {}
        for (rule_id, device), st in self.rstate.items():
            self.device_states.setdefault(device, {})[rule_id] = st
        self.active: dict[str, Alert] = {}
        for row in store.load_active_alerts():
            self.active[row["id"]] = Alert.from_row(row)
        # Pending transaction (flushed at the end of each batch / tick / API call).
        self._dirty_alerts: dict[str, Alert] = {}
        self._deleted_alerts: set[str] = set()
        self.dirty_rstate: set[tuple[str, str]] = set()
        self._outbox: list[tuple[str, str, str, dict[str, Any], int]] = []
        self._live: list[Notification] = []

    def state(self, rule_id: str, device: str) -> RuleState:
        key = (rule_id, device)
        st = self.rstate.get(key)
        if st is None:
            st = self.rstate[key] = RuleState()
            self.device_states.setdefault(device, {})[rule_id] = st
        return st

    def step(self, rule: Rule, dev: Device, t: int, res: Result, *, still: bool | None, keep_s: float,
              for_s: float = 0.0, consecutive: int = 1) -> None:
        key = (rule.id, dev.device)
        st = self.state(rule.id, dev.device)
        alert = self.active.get(st.alert_id) if st.alert_id else None
        if alert is not None and alert.state == "firing":
            if still is None:
                return
            if still:
                if st.clear_since is not None:
                    st.clear_since = None
                    self.dirty_rstate.add(key)
                return
            if st.clear_since is None:
                st.clear_since = t
                self.dirty_rstate.add(key)
            if t - st.clear_since >= keep_s * 1000:
                self.resolve(rule, dev, st, t, value=res.value)
            return
        if res.active:
            if st.pending_since is None:
                st.pending_since = t
            st.consecutive += 1
            self.dirty_rstate.add(key)
            if t - st.pending_since >= for_s * 1000 and st.consecutive >= consecutive:
                self.fire(rule, dev, st, t, res)
            elif alert is None:
                row = self.new_alert(rule, dev, st, st.pending_since, res, severity=rule.severity,
                                      state="pending", occurrence=st.episodes + 1)
                st.alert_id = row.id
                self.publish_live("pending", row)
        elif st.pending_since is not None or st.consecutive or alert is not None:
            st.pending_since, st.consecutive = None, 0
            self.dirty_rstate.add(key)
            if alert is not None:  # pending that did not last: it never existed for anyone
                self.active.pop(alert.id, None)
                self._dirty_alerts.pop(alert.id, None)
                self._deleted_alerts.add(alert.id)
                st.alert_id = None

    def fire(self, rule: Rule, dev: Device, st: RuleState, t: int, res: Result) -> None:
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
        old = self.active.get(st.alert_id) if st.alert_id else None
        row = self.new_alert(rule, dev, st, started, res, severity=severity, state="firing",
                              occurrence=st.episodes, message=message, action=action)
        if old is not None and old.id != row.id:
            self.active.pop(old.id, None)
            self._deleted_alerts.add(old.id)
        row.fired_ms = t
        st.alert_id = row.id
        st.pending_since, st.consecutive, st.clear_since = None, 0, None
        self.dirty_rstate.add((rule.id, dev.device))
        silenced = self._silenced(row, self.now_ms())
        row.notified = 0 if silenced else 1
        row.last_notified_ms = None if silenced else self.now_ms()
        self.notify("firing", row, t, external=not silenced)

    def resolve(self, rule: Rule, dev: Device, st: RuleState, t: int, *, value: Any) -> None:
        row = self.active.pop(st.alert_id, None) if st.alert_id else None
        st.alert_id, st.clear_since, st.pending_since, st.consecutive = None, None, None, 0
        st.last_violation = None
        self.dirty_rstate.add((rule.id, dev.device))
        if row is None:
            return
        if row.state == "pending":
            self._deleted_alerts.add(row.id)
            return
        row.state = "resolved"
        row.resolved_ms = max(t, row.started_ms)
        if value is not None:
            row.value = _round(rule, value)
        self.notify("resolved", row, row.resolved_ms, external=bool(row.notified))

    def new_alert(self, rule: Rule, dev: Device, st: RuleState, started: int, res: Result, *, severity: str,
                   state: str, occurrence: int, message: Text | None = None, action: Text | None = None) -> Alert:
        aid = alert_id(rule.id, dev.device, started)
        value = _round(rule, res.value)
        threshold = _round(rule, res.threshold)
        zh, en = self._renderer.render(rule, dev.site, dev.device, dev.kind, message or rule.message,
                                       action or rule.action, value, threshold, occurrence)
        row = Alert(aid, rule.id, dev.kind, dev.site, dev.device, rule.primary_field, severity, state,
                    value=value, threshold=threshold, started_ms=started, message=zh, message_en=en,
                    occurrence=occurrence, updated_ms=self._wall_ms())
        self.active[aid] = row
        self.touch(row)
        return row

    # -- notifications and the pending transaction ----------------------------------------
    def touch(self, row: Alert) -> None:
        row.updated_ms = self._wall_ms()
        self._dirty_alerts[row.id] = row

    def notify(self, event: str, row: Alert, t: int, *, external: bool) -> None:
        self.touch(row)
        payload = row.to_payload(self._iso)
        for n in self._notifiers:
            if external or n.name == "history":
                self._outbox.append((n.name, event, row.id, payload, t))
        self.publish_live(event, row, payload)
        self.stats["notifications"] += 1

    def publish_live(self, event: str, row: Alert, payload: dict[str, Any] | None = None) -> None:
        self._hub_seq += 1
        self._live.append(Notification(self._hub_seq, event, payload or row.to_payload(self._iso), self._wall_ms()))

    def flush(self) -> None:
        """Commit everything this batch changed in one transaction, then wake delivery."""
        if not (self._dirty_alerts or self._deleted_alerts or self.dirty_rstate or self._outbox):
            self.emit_live()
            return
        with self.store.transaction() as tx:
            for aid in self._deleted_alerts:
                if aid not in self._dirty_alerts:
                    tx.delete_alert(aid)
            for row in self._dirty_alerts.values():
                tx.upsert_alert(row.to_row())
            for key in self.dirty_rstate:
                st = self.rstate.get(key)
                if st is not None and st.is_idle():
                    self.rstate.pop(key, None)
                    states = self.device_states.get(key[1])
                    if states is not None:
                        states.pop(key[0], None)
                        if not states:
                            del self.device_states[key[1]]
                    st = None
                tx.put_rstate(key[0], key[1], asdict(st) if st is not None else None)
            for name, event, aid, payload, t in self._outbox:
                tx.enqueue(name, event, aid, payload, t)
        had_outbox = bool(self._outbox)
        self._dirty_alerts, self._deleted_alerts, self.dirty_rstate, self._outbox = {}, set(), set(), []
        if had_outbox:
            self._wake()
        self.emit_live()

    def emit_live(self) -> None:
        live, self._live = self._live, []
        for n in live:
            self._hub.publish(n)

    def ack(self, alert_id: str, *, by: str, note: str = "") -> dict[str, Any]:
        """Acknowledge (idempotent). Stops re-notification and escalation of this alert.
        Commits at once (`flush`): the caller holds the engine's lock."""
        row = self.active.get(alert_id)
        if row is None:
            stored = self.store.get_alert(alert_id)
            if stored is None:
                raise AlertNotFound(f"no alert {alert_id}")
            row = Alert.from_row(stored)
        if row.acked:
            return row.to_payload(self._iso)
        row.acked, row.acked_by, row.acked_ms, row.ack_note = 1, by, self._wall_ms(), note
        external = bool(row.notified) and not self._silenced(row, self.now_ms())
        if row.state == "pending":
            self.touch(row)
        else:
            self.notify("acked", row, self._wall_ms(), external=external)
        self.flush()
        return row.to_payload(self._iso)

    # -- the timer ---------------------------------------------------------------------------
    def on_timer(self, now: int, rules: Mapping[str, Rule], devices: Mapping[str, Device], repeat_ms: int) -> None:
        """What time alone changes for firing alerts: keep_firing_for expiry of a quiet
        device, event auto-resolve, the day change of a daily ratio, notifying what a
        silence held back once it ended, escalation and repeat. (Deadman is evaluation:
        the engine's.)"""
        for aid, row in list(self.active.items()):
            rule = rules.get(row.rule)
            dev = devices.get(row.device)
            if rule is None or dev is None:
                continue
            st = self.state(rule.id, dev.device)
            if row.state != "firing":
                continue
            keep = getattr(rule, "keep_firing_for", None)
            if isinstance(rule, ThresholdRule) and st.clear_since is not None and keep is not None \
                    and now - st.clear_since >= keep * 1000:
                self.resolve(rule, dev, st, max(now, st.clear_since), value=None)
                continue
            if isinstance(rule, EventRule) and st.last_violation is not None \
                    and now - st.last_violation >= rule.resolve_after * 1000:
                self.resolve(rule, dev, st, now, value=None)
                continue
            if isinstance(rule, DailyRatioRule) and st.ratio_day and self._local_day(now) > st.ratio_day:
                self.resolve(rule, dev, st, now, value=None)
                continue
            silenced = self._silenced(row, now)
            if not row.notified:
                if not silenced:
                    row.notified, row.last_notified_ms = 1, now
                    self.notify("firing", row, now, external=True)
                continue
            if row.acked or silenced:
                continue
            # "Unacknowledged for N minutes" counts from when people were told, on the
            # timer's clock: fired_ms is event time, which in a replay of the past lies
            # hours behind the wall clock and would escalate at once.
            if rule.escalate_after is not None and not row.escalated and row.last_notified_ms is not None \
                    and now - row.last_notified_ms >= rule.escalate_after * 1000:
                row.escalated = 1
                row.severity = rule.escalate_to or _NEXT_SEVERITY[row.severity]
                row.last_notified_ms = now
                self.notify("escalated", row, now, external=True)
                continue
            repeat = (rule.repeat_interval * 1000) if rule.repeat_interval else repeat_ms
            if row.last_notified_ms is not None and now - row.last_notified_ms >= repeat:
                row.last_notified_ms = now
                self.notify("repeat", row, now, external=True)
