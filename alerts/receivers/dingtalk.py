"""DingTalk custom robot (钉钉自定义机器人).

Documented request: POST JSON to the robot's webhook URL (`...robot/send?access_token=`);
with 加签 (a `SEC...` secret) add query parameters `timestamp` (epoch ms, within one hour
of DingTalk's clock) and `sign` = urlencode(Base64(HMAC-SHA256(key=secret,
msg="{timestamp}\\n{secret}"))). Markdown message: `{"msgtype": "markdown", "markdown":
{"title", "text"}, "at": {"atMobiles": [...], "isAtAll": false}}`; an @mobile shows only
when the text also contains `@mobile`. Answer: `{"errcode": 0, "errmsg": "ok"}`; 130101
is "send too fast" (a robot takes 20 messages a minute, then is throttled for 10 minutes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from alerts.notify import Delivery
from alerts.receivers.base import GroupBatch, HttpReceiver

SEND_TOO_FAST = 130101
# Malformed messages (missing parameters, unsupported type, content too long): retrying
# the same body cannot help. Everything else (throttle, bad signature, IP or keyword
# setting) is retried, so nothing is lost while someone fixes the robot.
PERMANENT = frozenset({40035, 43004, 430101, 430102, 430103, 430104, 460101})


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """Base64 HMAC-SHA256 of "timestamp\\nsecret" keyed with the secret (not yet URL-encoded)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class DingTalkReceiver(HttpReceiver):
    style = "markdown"
    max_bytes = 18000  # the markdown text limit is about 20,000 bytes; keep room for @mentions
    default_limits = ((20, 60.0),)

    def body(self, messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        r = self.render(messages)
        mobiles = list(self.cfg.at_mobiles)
        text = r.body + ("\n\n" + " ".join(f"@{m}" for m in mobiles) if mobiles and r.firing else "")
        return {"msgtype": "markdown", "markdown": {"title": r.title, "text": text},
                "at": {"atMobiles": mobiles if r.firing else [], "isAtAll": bool(self.cfg.at_all and r.firing)}}

    def signed_url(self) -> str:
        url = self.cfg.url.get_secret_value()
        if self.cfg.secret is None:
            return url
        ts = int(self.clock() * 1000)
        query = urlencode({"timestamp": ts, "sign": dingtalk_sign(self.cfg.secret.get_secret_value(), ts)})
        return url + ("&" if "?" in url else "?") + query

    async def send(self, batch: GroupBatch) -> Delivery:
        return await self.post_json(self.signed_url(), self.body(batch.messages), retry_codes={SEND_TOO_FAST},
                                    permanent_codes=PERMANENT)
