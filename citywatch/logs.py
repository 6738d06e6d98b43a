"""Structured logs: one JSON object per line (or plain text for people at a terminal).

`redact_url` is the one way a URL is shown (logs, errors, health, API answers): userinfo
and query values are replaced by `***`. The formatters also scrub any `scheme://user:pass@`
left in a message (a library's own log line, an exception text) as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from urllib.parse import urlsplit, urlunsplit

# scheme://userinfo@ → scheme://***@ (userinfo never holds '/', '@' or whitespace)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s\"']+@")


def redact_url(url: object) -> str:
    """`mqtt://user:pass@host:1883` → `mqtt://***@host:1883`; `https://h/hook?token=abc` →
    `https://h/hook?token=***`. Anything that does not parse is scrubbed of userinfo only."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return scrub(text)
    if not parts.scheme or not parts.netloc:
        return scrub(text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(f"{p.partition('=')[0]}=***" if "=" in p else "***" for p in parts.query.split("&") if p)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(text: str) -> str:
    """Remove the userinfo of every URL inside a free text."""
    return _USERINFO.sub(r"\1***@", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        if record.exc_info:
            doc["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # paho logs every packet at DEBUG; keep it to warnings unless asked.
    logging.getLogger("citywatch.paho").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("httpx").setLevel(logging.WARNING)
