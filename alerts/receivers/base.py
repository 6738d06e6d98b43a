"""What every receiver shares: the batch it is given, its protocol, and the HTTP call.

A receiver is the notifier of one route file entry. Like every notifier it sends once and
never sleeps, loops or retries: `send(batch) -> Delivery` only says whether a failure is
worth retrying. `GroupDispatcher` (alerts/routing/deliver.py) owns order, rate limits,
merging and backoff. Receivers never put a URL (with its token) into a Delivery detail or
a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from alerts.notify import Delivery
from alerts.receivers.render import Rendered, Style, render

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class GroupBatch:
    """One or more group notifications (outbox rows, oldest first) to send as one message."""

    seq: int  # the first row's outbox seq
    messages: tuple[Mapping[str, Any], ...]
    created_ms: int


class Receiver(Protocol):
    name: str
    limits: tuple[tuple[int, float], ...]  # (messages, per seconds) windows; empty = no limit
    max_merge: int  # groups per message at most

    def fits(self, messages: Sequence[Mapping[str, Any]]) -> bool:
        """Whether these groups fit one message of the platform (its size limit)."""
        ...

    async def send(self, batch: GroupBatch) -> Delivery:
        ...


class _RedactReceiverUrls(logging.Filter):
    """httpx logs every request's full URL at INFO (and the service sets it to WARNING, but a
    library user may not): a robot's access_token, key or hook id would end up in a log.
    This filter on the `httpx` logger replaces each receiver URL, query and all, by its name."""

    def __init__(self) -> None:
        super().__init__()
        self._urls: dict[str, str] = {}

    def add(self, url: str, name: str) -> None:
        p = urlsplit(url)
        self._urls[f"{p.scheme}://{p.netloc}{p.path}"] = name

    def filter(self, record: logging.LogRecord) -> bool:
        if self._urls:
            msg = record.getMessage()
            for base, name in self._urls.items():
                if base in msg:
                    msg = re.sub(re.escape(base) + r"[^\s\"']*", f"<receiver {name}>", msg)
            record.msg, record.args = msg, ()
        return True


REDACT = _RedactReceiverUrls()
logging.getLogger("httpx").addFilter(REDACT)


def retryable_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class HttpReceiver:
    """Shared by the chat robots: render, size check, POST JSON, sort the answer."""

    style: Style = "markdown"
    max_bytes: int = 20000
    max_merge: int = 20
    default_limits: tuple[tuple[int, float], ...] = ()

    def __init__(self, cfg: Any, *, dashboard_url: str | None, clock: Clock,
                 client: httpx.AsyncClient | None = None):
        self.cfg = cfg
        self.name: str = cfg.name
        self.lang: str = cfg.language
        self.dashboard_url = dashboard_url
        self.clock = clock
        per_minute = getattr(cfg, "rate_limit_per_minute", None)
        self.limits = ((per_minute, 60.0),) if per_minute else self.default_limits
        self._client = client or httpx.AsyncClient(timeout=getattr(cfg, "timeout", 10.0))
        REDACT.add(cfg.url.get_secret_value(), self.name)

    def _render(self, messages: Sequence[Mapping[str, Any]], per_group: int) -> Rendered:
        return render(messages, lang=self.lang, style=self.style, dashboard_url=self.dashboard_url,
                      max_alerts_per_group=per_group)

    def render(self, messages: Sequence[Mapping[str, Any]]) -> Rendered:
        """The message, within the platform's size limit: a group too big for it lists fewer
        of its alerts and says how many more are on the dashboard (a refused message would
        say nothing at all)."""
        for per_group in (20, 10, 5, 3, 1):
            r = self._render(messages, per_group)
            if len(r.body.encode()) <= self.max_bytes:
                return r
        cut = r.body.encode()[:self.max_bytes - 4].decode(errors="ignore")
        return Rendered(r.title, cut + " …", r.firing, r.resolved)

    def fits(self, messages: Sequence[Mapping[str, Any]]) -> bool:
        """Whether these groups, with full detail, fit one message (decides merging)."""
        return len(self._render(messages, 20).body.encode()) <= self.max_bytes

    async def post_json(self, url: str, body: Any, *, ok_key: str = "errcode", retry_codes: Container[int] = (),
                        permanent_codes: Container[int] = ()) -> Delivery:
        """POST and sort the answer: HTTP status first, then the platform's error code
        (2xx with a non-zero code is a failure; retried unless the code says the message
        itself is malformed, so a misconfigured robot keeps everything until fixed)."""
        try:
            resp = await self._client.post(url, json=body, headers={"Content-Type": "application/json; charset=utf-8"})
        except httpx.HTTPError as exc:
            return Delivery(False, retryable=True, detail=f"{self.name}: {type(exc).__name__}")
        if not 200 <= resp.status_code < 300:
            return Delivery(False, retryable=retryable_status(resp.status_code),
                            detail=f"{self.name}: HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            return Delivery(False, retryable=True, detail=f"{self.name}: answer is not JSON")
        code = data.get(ok_key, data.get("StatusCode", 0)) if isinstance(data, dict) else 0
        if code in (0, None):
            return Delivery(True, detail=f"{self.name}: ok")
        msg = str(data.get("errmsg") or data.get("msg") or "")[:120]
        retry = code in retry_codes or code not in permanent_codes
        return Delivery(False, retryable=retry, detail=f"{self.name}: code {code} {msg}".strip())

    async def aclose(self) -> None:
        await self._client.aclose()
