"""The citywatch webhook as a routed receiver: the existing `WebhookNotifier` (same
signature header, same retry sorting) carrying one group per POST:
`{"event": "group", "seq": <outbox seq>, "alert": <the group notification>}`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alerts.notify import Delivery, Notification, WebhookNotifier
from alerts.receivers.base import REDACT, Clock, GroupBatch


class WebhookGroupReceiver:
    max_merge = 1  # one group per POST: a program on the other side gets one shape

    def __init__(self, cfg: Any, *, dashboard_url: str | None, clock: Clock, client: Any = None):
        self.name: str = cfg.name
        self.limits = ((cfg.rate_limit_per_minute, 60.0),) if cfg.rate_limit_per_minute else ()
        self.dashboard_url = dashboard_url
        REDACT.add(cfg.url.get_secret_value(), cfg.name)
        self._notifier = WebhookNotifier(cfg.url.get_secret_value(), cfg.secret.get_secret_value(), name=cfg.name,
                                         timeout=cfg.timeout, client=client)

    def fits(self, messages: Sequence[Mapping[str, Any]]) -> bool:
        return len(messages) <= 1

    async def send(self, batch: GroupBatch) -> Delivery:
        group = {**batch.messages[0], "dashboard_url": self.dashboard_url}
        return await self._notifier.send(Notification(batch.seq, "group", group, batch.created_ms))

    async def aclose(self) -> None:
        await self._notifier.aclose()
