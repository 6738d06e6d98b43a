"""Feishu / Lark custom bot (飞书自定义机器人).

Documented request: POST JSON to `.../open-apis/bot/v2/hook/{id}`. With 签名校验:
`timestamp` (epoch seconds, within one hour) and `sign` = Base64(HMAC-SHA256 with key
"{timestamp}\\n{secret}" over an empty message) in the body. Interactive card:
`{"msg_type": "interactive", "card": {"header": {"title": {"tag": "plain_text", ...}},
"elements": [...]}}`. Answer `{"code": 0, "msg": "success"}`; 19021 is a bad signature or
timestamp, 9499 too many requests (100 a minute, 5 a second per bot).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from alerts.notify import Delivery
from alerts.receivers.base import GroupBatch, HttpReceiver

TOO_MANY_REQUESTS = 9499
# No code is treated as permanent: a rejected card is kept and retried (and the receiver
# shows as down in /health) rather than dropped on a guess about the code's meaning.
PERMANENT: frozenset[int] = frozenset()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


class FeishuReceiver(HttpReceiver):
    style = "lark"
    max_bytes = 18000  # a request body is at most 20 KB
    default_limits = ((100, 60.0), (5, 1.0))

    def body(self, messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        r = self.render(messages)
        title, _, content = r.body.partition("\n")
        elements: list[dict[str, Any]] = [{"tag": "div", "text": {"tag": "lark_md", "content": content.strip()}}]
        if self.dashboard_url:
            label = "打开看板" if self.lang == "zh" else "Open the dashboard"
            elements.append({"tag": "action", "actions": [{"tag": "button", "type": "primary", "url": self.dashboard_url,
                                                           "text": {"tag": "plain_text", "content": label}}]})
        body: dict[str, Any] = {
            "msg_type": "interactive",
            "card": {"config": {"wide_screen_mode": True},
                     "header": {"template": "red" if r.firing else "green",
                                "title": {"tag": "plain_text", "content": r.title}},
                     "elements": elements}}
        if self.cfg.secret is not None:
            ts = int(self.clock())
            body = {"timestamp": str(ts), "sign": feishu_sign(self.cfg.secret.get_secret_value(), ts), **body}
        return body

    async def send(self, batch: GroupBatch) -> Delivery:
        return await self.post_json(self.cfg.url.get_secret_value(), self.body(batch.messages), ok_key="code",
                                    retry_codes={TOO_MANY_REQUESTS}, permanent_codes=PERMANENT)
