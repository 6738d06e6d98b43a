"""Plugging alerting into the service in a few lines (the pipeline, top to bottom)."""

from __future__ import annotations

import time
from collections.abc import Coroutine, Sequence
from typing import Any

from alerts.config import EngineConfig
from alerts.engine import AlertEngine, Clock
from alerts.notify import MqttNotifier, Notifier, WebhookNotifier
from alerts.rules import load_rules


def build_alerting(settings: Any, *, registry: Any = None, sink: Any = None, stream: Any = None,
                   clock: Clock = time.time, mqtt: bool = True,
                   webhooks: Sequence[tuple[str, str]] = (),
                   extra_notifiers: Sequence[Notifier] = ()) -> tuple[AlertEngine, list[Coroutine[Any, Any, None]]]:
    """Rules (shipped packs + CW_RULES_DIR) → engine with durable state at
    settings.alert_state_path → notifiers (MQTT alert topics, webhooks with a durable
    outbox, InfluxDB history through `sink`). Returns the engine (for the API) and the
    coroutines to run in the service's TaskGroup (they run until cancelled).

    With CW_ROUTES_FILE (`settings.routes_file`), alert changes also go through the routing
    pipeline (alerts/routing: route tree, groups, inhibition, receivers); `engine.routing`
    is then set. Without it, nothing changes.

    Webhooks come from `webhooks=[(url, secret)]`, or from the settings attributes
    `alert_webhook_url` / `alert_webhook_secret` when Settings has them.
    """
    rules = load_rules(settings.rules_dir, pack=settings.rule_pack)  # fails fast with every rule error listed
    notifiers: list[Notifier] = []
    if mqtt:
        notifiers.append(MqttNotifier.from_settings(settings))
    hooks = list(webhooks)
    url = getattr(settings, "alert_webhook_url", None)
    if url:
        secret = getattr(settings, "alert_webhook_secret", None)
        secret = secret.get_secret_value() if hasattr(secret, "get_secret_value") else (secret or "")
        hooks.append((str(url), secret))
    for i, (u, secret) in enumerate(hooks):
        notifiers.append(WebhookNotifier(u, secret, name="webhook" if i == 0 else f"webhook{i + 1}"))
    notifiers.extend(extra_notifiers)
    routing = None
    if getattr(settings, "routes_file", None):
        from alerts.routing import build_routing

        # Validated before anything starts: a bad file stops start-up with file:line: reason.
        routing = build_routing(settings, registry=registry, clock=clock)
        notifiers.append(routing.stage)
    engine = AlertEngine(EngineConfig.from_settings(settings), rules=rules, registry=registry,
                         notifiers=notifiers, sink=sink, clock=clock)
    tasks = [engine.run(stream)]
    if routing is not None:
        engine.routing = routing.attach(engine.store)  # type: ignore[attr-defined]  # read by /health, /metrics
        tasks.append(routing.run())
    return engine, tasks
