"""A generic SMS gateway: the HTTP request a bureau's provider already takes, from a template.

One request per message: `body` is a `string.Template` with `$text` (a short plain-text
message), `$title`, `$phones` (comma separated), `$phones_json` and `$site`. 2xx is
success unless `ok_when` (a regex) is set and the answer does not contain it (gateways that
answer 200 with an error code in the body).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from alerts.notify import Delivery
from alerts.receivers.base import GroupBatch, HttpReceiver, retryable_status
from alerts.receivers.render import render

MAX_TEXT = 500  # about seven 70-character segments


class SmsReceiver(HttpReceiver):
    style = "text"
    max_bytes = 1500
    max_merge = 10
    default_limits = ((10, 60.0),)

    def text(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
        r = render(messages, lang=self.lang, style="text", dashboard_url=self.dashboard_url, max_alerts_per_group=3)
        text = r.body.replace("\n", " ")
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT - 1] + "…"
        return r.title, text

    def fits(self, messages: Sequence[Mapping[str, Any]]) -> bool:
        return len(messages) <= self.max_merge

    def request(self, messages: Sequence[Mapping[str, Any]]) -> tuple[str, dict[str, str], bytes]:
        title, text = self.text(messages)
        json_body = "json" in self.cfg.content_type
        sites = sorted({str(a.get("site")) for m in messages for a in m.get("alerts", [])})

        def esc(v: str) -> str:
            return json.dumps(v, ensure_ascii=False)[1:-1] if json_body else v

        values = {"text": esc(text), "title": esc(title), "phones": esc(",".join(self.cfg.phones)),
                  "phones_json": json.dumps(self.cfg.phones), "site": esc(",".join(sites))}
        body = string.Template(self.cfg.body).substitute(values).encode()
        headers = {k: v.get_secret_value() for k, v in self.cfg.headers.items()}
        headers.setdefault("Content-Type", self.cfg.content_type)
        return self.cfg.url.get_secret_value(), headers, body

    async def send(self, batch: GroupBatch) -> Delivery:
        url, headers, body = self.request(batch.messages)
        try:
            if self.cfg.method == "GET":
                resp = await self._client.get(url, headers=headers)
            else:
                resp = await self._client.request(self.cfg.method, url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            return Delivery(False, retryable=True, detail=f"{self.name}: {type(exc).__name__}")
        if not 200 <= resp.status_code < 300:
            return Delivery(False, retryable=retryable_status(resp.status_code),
                            detail=f"{self.name}: HTTP {resp.status_code}")
        if self.cfg.ok_when and not re.search(self.cfg.ok_when, resp.text):
            return Delivery(False, retryable=True, detail=f"{self.name}: gateway answer does not match ok_when")
        return Delivery(True, detail=f"{self.name}: ok")
