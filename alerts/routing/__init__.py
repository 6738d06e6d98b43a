"""Routing alerts to people (CW_ROUTES_FILE): Alertmanager's pipeline, stage by stage.

    engine outbox ──▶ RoutingStage ──▶ Grouper (route tree, group_by)      alerts/routing/tree.py, group.py
    (one row per alert change,          │ group_wait / group_interval / repeat_interval
     silences already applied)           ▼ flush: inhibition, one outbox row per group       inhibit.py
                                     GroupDispatcher per receiver: rate limit, merge, backoff  deliver.py
                                         ▼
                                     DingTalk / WeCom / Feishu / SMS / email / webhook          alerts/receivers/

Built by `build_routing(settings, ...)` (alerts/build.py calls it when CW_ROUTES_FILE is
set); `attach(store)` binds it to the engine's SQLite; `run()` runs the flusher and the
receivers until cancelled. Every hop is durable: the engine's outbox row for the alert
change, the group state, the receiver's outbox row (see group.py for the promise).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from alerts.notify import Delivery, Notification
from alerts.receivers import Receiver, build_receiver
from alerts.routing.config import LABELS, RoutesFile, load_routes, parse_routes
from alerts.routing.deliver import GroupDispatcher, RateLimiter
from alerts.routing.group import Grouper, outbox_name
from alerts.routing.inhibit import InhibitRule
from alerts.routing.tree import Route, build_tree
from citywatch.aio import wait_event

log = logging.getLogger("citywatch.alerts.routing")

Clock = Callable[[], float]


class RoutingStage:
    """The engine-side notifier: takes each alert change from the engine's outbox (after
    silences) into the groups. Returns once the change is recorded durably."""

    name = "routes"

    def __init__(self, routing: "Routing"):
        self._routing = routing

    async def send(self, notification: Notification) -> Delivery:
        if notification.event == "pending":
            return Delivery(True)
        if not self._routing.add(notification.alert):
            # The engine's delivery stage keeps the change and hands it over again.
            return Delivery(False, retryable=True, detail="alert state held in memory (disk full)")
        return Delivery(True)


def labels_from(registry: Any = None) -> Callable[[Mapping[str, Any]], dict[str, str]]:
    """An alert's routing labels. `district` comes from the alert, else from the registry
    entry of its device (when the registry knows districts)."""
    get = None if registry is None else getattr(registry, "get", None)

    def labels_of(alert: Mapping[str, Any]) -> dict[str, str]:
        out = {k: str(alert.get(k) or "") for k in LABELS}
        if not out["district"] and get is not None and alert.get("device"):
            dev = get(str(alert["device"]))
            out["district"] = str(getattr(dev, "district", None) or "")
        return out

    return labels_of


class Routing:
    def __init__(self, cfg: RoutesFile, *, receivers: Mapping[str, Receiver], clock: Clock = time.time,
                 tz: str = "Asia/Shanghai", labels_of: Callable[[Mapping[str, Any]], dict[str, str]] | None = None):
        self.cfg = cfg
        self.tree: Route = build_tree(cfg)
        self.inhibit_rules = [InhibitRule.from_config(r) for r in cfg.inhibit_rules]
        self.receivers = dict(receivers)
        self.clock = clock
        self.tz = ZoneInfo(tz)
        self.labels_of = labels_of or labels_from(None)
        self.stage = RoutingStage(self)
        self.store: Any = None  # the engine's AlertStore, from attach()
        self.grouper: Grouper | None = None
        self.dispatchers: dict[str, GroupDispatcher] = {}
        self._wake = asyncio.Event()
        self.metrics_registry = CollectorRegistry(auto_describe=True)
        self.metrics_registry.register(_Collector(self))

    def attach(self, store: Any) -> "Routing":
        """Bind to the engine's SQLite store (creating the routing tables)."""
        store.ensure_routing_schema()
        self.store = store
        self.grouper = Grouper(store, self.tree, self.inhibit_rules, labels_of=self.labels_of, tz=self.tz,
                               receivers=list(self.receivers))
        self.dispatchers = {name: GroupDispatcher(store, r, clock=self.clock) for name, r in self.receivers.items()}
        return self

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def add(self, alert: Mapping[str, Any]) -> bool:
        """Record an alert change in its groups; False: not now (see Grouper.add)."""
        assert self.grouper is not None, "attach(store) first"
        if not self.grouper.add(alert, self.now_ms()):
            return False
        self._wake.set()
        return True

    def flush(self) -> set[str]:
        """Flush due groups now; wake the receivers that got rows. Returns their names."""
        assert self.grouper is not None, "attach(store) first"
        names = self.grouper.flush_due(self.now_ms())
        for name in names:
            d = self.dispatchers.get(name)
            if d is not None:
                d.wake.set()
        return names

    async def run(self) -> None:
        """The flusher and one dispatcher per receiver, until cancelled."""
        self._wake = asyncio.Event()
        for d in self.dispatchers.values():
            d.wake = asyncio.Event()
            d.wake.set()
        try:
            async with asyncio.TaskGroup() as tg:
                for name, d in self.dispatchers.items():
                    tg.create_task(d.run(), name=f"alerts-receiver-{name}")
                tg.create_task(self._flusher(), name="alerts-groups")
        finally:
            await self.aclose()

    async def _flusher(self) -> None:
        assert self.grouper is not None
        while True:
            try:
                self.flush()
            except Exception:  # keep flushing; the error is logged with its traceback
                log.exception("alert group flush failed")
            due = self.grouper.next_due_ms()
            wait = 1.0 if due is None else max(0.0, min(1.0, (due - self.now_ms()) / 1000))
            # At most a second between looks: an injected clock may jump.
            if await wait_event(self._wake, wait):
                self._wake.clear()

    async def deliver_pending(self) -> int:
        """Send what may be sent now, receiver by receiver (tests, shutdown). Returns sends."""
        sends = 0
        for d in self.dispatchers.values():
            while True:
                before = d.health.sent + d.health.failures
                wait = await d.step()
                sends += d.health.sent + d.health.failures - before
                if wait != 0.0:
                    break
        return sends

    def status(self) -> dict[str, str]:
        """Per receiver: `ok`, `retrying` (1-2 failures in a row) or `down`."""
        out = {}
        for name, d in self.dispatchers.items():
            h = d.health
            out[name] = "ok" if h.consecutive_failures == 0 else "retrying" if h.up else "down"
        return out

    def backlog(self) -> dict[str, int]:
        counts = self.store.outbox_backlog() if self.dispatchers else {}
        return {name: counts.get(outbox_name(name), 0) for name in self.dispatchers}

    async def aclose(self) -> None:
        for r in self.receivers.values():
            close = getattr(r, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # closing must not hide the real shutdown reason
                    log.debug("closing receiver %s failed", r.name, exc_info=True)


class _Collector:
    """Prometheus metrics of the receivers (read at scrape time)."""

    def __init__(self, routing: Routing):
        self._r = routing

    def collect(self):
        up = GaugeMetricFamily("citywatch_alert_receiver_up", "1 unless the receiver failed 3 times in a row",
                               labels=["receiver"])
        backlog = GaugeMetricFamily("citywatch_alert_receiver_backlog", "group notifications waiting for a receiver",
                                    labels=["receiver"])
        sent = CounterMetricFamily("citywatch_alert_receiver_messages", "messages a receiver accepted",
                                   labels=["receiver"])
        groups = CounterMetricFamily("citywatch_alert_receiver_groups", "group notifications delivered (merged "
                                     "ones count one each)", labels=["receiver"])
        failed = CounterMetricFamily("citywatch_alert_receiver_failures", "failed sends", labels=["receiver"])
        if self._r.dispatchers:
            counts = self._r.backlog()
            for name, d in self._r.dispatchers.items():
                up.add_metric([name], 1.0 if d.health.up else 0.0)
                backlog.add_metric([name], float(counts.get(name, 0)))
                sent.add_metric([name], float(d.health.sent))
                groups.add_metric([name], float(d.health.merged_groups))
                failed.add_metric([name], float(d.health.failures))
        return [up, backlog, sent, groups, failed]


def build_routing(settings: Any, *, registry: Any = None, clock: Clock = time.time,
                  path: Path | str | None = None) -> Routing:
    """Load and validate the route file (ConfigError with file:line: reason) and build
    its receivers. Call `attach(engine.store)` before `run()`."""
    cfg = load_routes(path or settings.routes_file)
    dashboard = getattr(settings, "dashboard_url", None) or \
        f"http://{getattr(settings, 'api_host', '127.0.0.1')}:{getattr(settings, 'api_port', 8000)}/"
    mqtt = settings.mqtt if any(r.type == "mqtt" for r in cfg.receivers) else None
    receivers = {r.name: build_receiver(r, dashboard_url=dashboard, clock=clock, mqtt=mqtt) for r in cfg.receivers}
    return Routing(cfg, receivers=receivers, clock=clock, tz=getattr(settings, "tz", "Asia/Shanghai"),
                   labels_of=labels_from(registry))


__all__ = ["GroupDispatcher", "Grouper", "RateLimiter", "Route", "Routing", "RoutingStage", "RoutesFile",
           "build_routing", "build_tree", "labels_from", "load_routes", "parse_routes"]
