"""Email over SMTP (stdlib smtplib, in a worker thread): a plain-text message per batch.

`tls: starttls` (default, port 587) or `ssl` (465); `none` only to a loopback relay. A
4xx SMTP answer or a lost connection is retried; a 5xx answer (mailbox unknown, relay
refused) is not.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from alerts.notify import Delivery
from alerts.receivers.base import Clock, GroupBatch
from alerts.receivers.render import render


class EmailReceiver:
    max_merge = 50

    def __init__(self, cfg: Any, *, dashboard_url: str | None, clock: Clock):
        self.cfg = cfg
        self.name: str = cfg.name
        self.dashboard_url = dashboard_url
        self.clock = clock
        self.limits = ((cfg.rate_limit_per_minute, 60.0),) if cfg.rate_limit_per_minute else ()

    def fits(self, messages: Sequence[Mapping[str, Any]]) -> bool:
        return len(messages) <= self.max_merge

    def message(self, batch: GroupBatch) -> EmailMessage:
        r = render(batch.messages, lang=self.cfg.language, style="text", dashboard_url=self.dashboard_url)
        msg = EmailMessage()
        msg["Subject"] = f"[citywatch] {r.title}"
        msg["From"] = self.cfg.sender
        msg["To"] = ", ".join(self.cfg.to)
        msg["Date"] = formatdate(self.clock(), localtime=False)
        # Stable per outbox row: a mail server or client can spot the rare re-send after a crash.
        msg["Message-ID"] = make_msgid(idstring=f"citywatch-{self.name}-{batch.seq}", domain="citywatch.local")
        msg.set_content(r.body)
        return msg

    def _send_sync(self, msg: EmailMessage) -> None:
        c = self.cfg
        if c.tls == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(c.smtp_host, c.smtp_port, timeout=c.timeout,
                                                  context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=c.timeout)
        with smtp:
            if c.tls == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if c.username:
                smtp.login(c.username, c.password.get_secret_value() if c.password else "")
            smtp.send_message(msg)

    async def send(self, batch: GroupBatch) -> Delivery:
        try:
            await asyncio.to_thread(self._send_sync, self.message(batch))
        except smtplib.SMTPResponseException as exc:
            return Delivery(False, retryable=exc.smtp_code < 500, detail=f"{self.name}: SMTP {exc.smtp_code}")
        except smtplib.SMTPRecipientsRefused:
            return Delivery(False, retryable=False, detail=f"{self.name}: recipients refused")
        except (smtplib.SMTPException, OSError) as exc:
            return Delivery(False, retryable=True, detail=f"{self.name}: {type(exc).__name__}")
        return Delivery(True, detail=f"{self.name}: ok")

    async def aclose(self) -> None:
        return None
