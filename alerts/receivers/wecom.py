"""WeCom group robot (企业微信群机器人).

Documented request: POST JSON to `.../cgi-bin/webhook/send?key=KEY` (the key is the
credential; there is no signature): `{"msgtype": "markdown", "markdown": {"content": ...}}`,
content at most 4096 bytes of UTF-8. Answer `{"errcode": 0, "errmsg": "ok"}`; 45009 is the
frequency limit (20 messages a minute per robot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alerts.notify import Delivery
from alerts.receivers.base import GroupBatch, HttpReceiver

FREQUENCY_LIMIT = 45009
PERMANENT = frozenset({40008, 40058, 44004, 45002})  # bad type / parameter, empty or too long content


class WeComReceiver(HttpReceiver):
    style = "lark"  # WeCom markdown: bold title, single line breaks (no headings needed)
    max_bytes = 4096
    default_limits = ((20, 60.0),)

    def body(self, messages: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"msgtype": "markdown", "markdown": {"content": self.render(messages).body}}

    async def send(self, batch: GroupBatch) -> Delivery:
        return await self.post_json(self.cfg.url.get_secret_value(), self.body(batch.messages),
                                    retry_codes={FREQUENCY_LIMIT}, permanent_codes=PERMANENT)
