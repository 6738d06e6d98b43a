"""Receivers of routed group notifications: DingTalk, WeCom, Feishu, SMS gateway, email,
webhook, MQTT. `RECEIVERS` maps a route file's `type:` to the class that sends it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alerts.receivers.base import GroupBatch, Receiver
from alerts.receivers.dingtalk import DingTalkReceiver, dingtalk_sign
from alerts.receivers.email import EmailReceiver
from alerts.receivers.feishu import FeishuReceiver, feishu_sign
from alerts.receivers.mqtt import MqttGroupReceiver
from alerts.receivers.sms import SmsReceiver
from alerts.receivers.webhook import WebhookGroupReceiver
from alerts.receivers.wecom import WeComReceiver

RECEIVERS: dict[str, Callable[..., Receiver]] = {
    "dingtalk": DingTalkReceiver,
    "wecom": WeComReceiver,
    "feishu": FeishuReceiver,
    "sms": SmsReceiver,
    "email": EmailReceiver,
    "webhook": WebhookGroupReceiver,
    "mqtt": MqttGroupReceiver,
}


def build_receiver(cfg: Any, *, dashboard_url: str | None, clock: Callable[[], float], mqtt: Any = None) -> Receiver:
    """`mqtt`: the service's broker address (settings.mqtt), for `type: mqtt` receivers."""
    if cfg.type == "mqtt":
        return MqttGroupReceiver(cfg, dashboard_url=dashboard_url, clock=clock, mqtt=mqtt)
    return RECEIVERS[cfg.type](cfg, dashboard_url=dashboard_url, clock=clock)


__all__ = ["RECEIVERS", "DingTalkReceiver", "EmailReceiver", "FeishuReceiver", "GroupBatch", "MqttGroupReceiver", "Receiver",
           "SmsReceiver", "WeComReceiver", "WebhookGroupReceiver", "build_receiver", "dingtalk_sign",
           "feishu_sign"]
