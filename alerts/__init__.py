"""Alerting: rules as data, an event-time engine with durable state, and notifiers.

    engine, tasks = build_alerting(settings, registry=registry, sink=sink, stream=stream)
    async with asyncio.TaskGroup() as tg:
        for t in tasks:
            tg.create_task(t)

See alerts/README.md for the rule format, lifecycle, durability and notifiers.
"""

from alerts.build import build_alerting
from alerts.config import EngineConfig
from alerts.engine import AlertEngine, AlertError, AlertNotFound
from alerts.notify import (Backoff, Delivery, MqttNotifier, Notification, NotificationHub, Notifier,
                           OutboxDispatcher, SinkNotifier, WebhookNotifier, sign)
from alerts.rules import Rule, check_rules, load_rules, parse_rule, rules_check

__all__ = [
    "AlertEngine",
    "AlertError",
    "AlertNotFound",
    "Backoff",
    "Delivery",
    "EngineConfig",
    "MqttNotifier",
    "Notification",
    "NotificationHub",
    "Notifier",
    "OutboxDispatcher",
    "Rule",
    "SinkNotifier",
    "WebhookNotifier",
    "build_alerting",
    "check_rules",
    "load_rules",
    "parse_rule",
    "rules_check",
    "sign",
]
