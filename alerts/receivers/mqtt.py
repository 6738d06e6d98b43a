"""Group notifications on MQTT, for programs on the bus (a control-room wall, a bridge to
another system): the existing `MqttNotifier`'s connection (CW_MQTT_URL, its own client
id), publishing each message as JSON, QoS 1, not retained, to `topic` (default
`citywatch/alert-groups/{receiver}`; outside `alerts/`, whose topics are the per-alert
contract). Waits for the PUBACK; not connected is retryable."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from alerts.notify import Delivery, MqttNotifier
from alerts.receivers.base import Clock, GroupBatch


class MqttGroupReceiver(MqttNotifier):
    max_merge = 1  # one group per message: subscribers get one shape

    def __init__(self, cfg: Any, *, dashboard_url: str | None, clock: Clock, mqtt: Any):
        super().__init__(host=mqtt.host, port=mqtt.port, username=mqtt.username, password=mqtt.password,
                         tls=mqtt.tls, client_id=f"citywatch-route-{cfg.name}")
        self.name = cfg.name
        self.topic = cfg.topic.replace("{receiver}", cfg.name)
        self.limits = ((cfg.rate_limit_per_minute, 60.0),) if cfg.rate_limit_per_minute else ()
        self.dashboard_url = dashboard_url

    def fits(self, messages: Sequence[Mapping[str, Any]]) -> bool:
        return len(messages) <= 1

    async def send(self, batch: GroupBatch) -> Delivery:  # type: ignore[override]
        body = {**batch.messages[0], "seq": batch.seq, "dashboard_url": self.dashboard_url}
        return await self._publish(self.topic, json.dumps(body, ensure_ascii=False).encode(), retain=False,
                                   name=self.name)
