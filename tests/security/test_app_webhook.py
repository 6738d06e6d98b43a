"""Webhooks: a captured delivery played again is rejected by a receiver that verifies as
alerts/README.md documents (the code is taken from the README and run here), and a
webhook without a secret of at least 32 bytes stops the service at start-up."""

from __future__ import annotations

import asyncio
import http.server
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from alerts.notify import MIN_SECRET_BYTES, Notification, WebhookNotifier
from citywatch.errors import ConfigError
from devtools.servers import free_port
from tests.security.app_helpers import clean_environ

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"7f3c9a1e5b2d4c6e8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d"  # 48 bytes


def documented_verify():
    """The receiver's check exactly as alerts/README.md shows it."""
    text = (ROOT / "alerts/README.md").read_text("utf-8")
    section = text[text.index("### Verifying a webhook delivery"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "alerts/README.md", "exec"), scope)  # noqa: S102 - our own documentation
    return scope["verify"]


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers 204 when `verify` accepts, else 401."""

    def __init__(self, verify, secret: bytes) -> None:
        self.accepted: list[bytes] = []
        self.rejected = 0
        self.captured: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.captured.append(({k: v for k, v in self.headers.items()}, body))
                ok = verify(secret, self.headers, body)
                if ok:
                    outer.accepted.append(body)
                else:
                    outer.rejected += 1
                self.send_response(204 if ok else 401)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_replayed_webhook_is_rejected_by_the_documented_receiver():
    verify = documented_verify()
    rx = Receiver(verify, SECRET)
    try:
        hook = WebhookNotifier(rx.url, SECRET, timeout=5)
        n = Notification(7, "firing", {"id": "a1", "rule": "dust_pm10_10min", "site": "S1", "device": "D1",
                                       "message": "PM10 超标"}, int(time.time() * 1000))
        delivery = asyncio.run(hook.send(n))
        asyncio.run(hook.aclose())
        assert delivery.ok, delivery
        assert len(rx.accepted) == 1 and rx.rejected == 0
        headers, body = rx.captured[0]
        send = lambda h, b: httpx.post(rx.url, content=b, headers={k: v for k, v in h.items()  # noqa: E731
                                                                    if k.lower().startswith(("x-", "content-t"))})
        # 1. the same request again, seconds later: a replay within the window
        assert send(headers, body).status_code == 401
        # 2. the body changed, signature kept
        assert send(headers, body.replace(b"firing", b"resolved")).status_code == 401
        # 3. a fresh timestamp pasted onto the captured signature
        assert send({**headers, "X-Citywatch-Timestamp": str(int(time.time()) + 1)}, body).status_code == 401
        # 4. no signature headers at all
        assert send({"Content-Type": "application/json"}, body).status_code == 401
        assert len(rx.accepted) == 1 and rx.rejected == 4
    finally:
        rx.close()
    # 5. the captured delivery replayed later, by a receiver that no longer remembers it
    #    (restarted, or past the window): its timestamp is too old
    fresh_verify = documented_verify()
    h = httpx.Headers(headers)  # any case-insensitive mapping
    assert fresh_verify(SECRET, h, body, now=int(h["X-Citywatch-Timestamp"]) + 10)  # in time: accepted
    assert not documented_verify()(SECRET, h, body, now=int(h["X-Citywatch-Timestamp"]) + 301)


@pytest.mark.parametrize("secret", [b"", b"k", b"x" * (MIN_SECRET_BYTES - 1)])
def test_notifier_refuses_a_short_secret(secret):
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        WebhookNotifier("http://127.0.0.1:9/hook", secret)


@pytest.mark.parametrize("secret", [None, "short-secret", "x" * (MIN_SECRET_BYTES - 1)])
def test_service_refuses_a_webhook_without_a_proper_secret(tmp_path, secret):
    env = {**clean_environ(), "CW_DATA_DIR": str(tmp_path / "data"), "CW_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/hook",
           "CW_MQTT_URL": "mqtt://127.0.0.1:1", "CW_INFLUX_URL": "http://127.0.0.1:2"}
    if secret is not None:
        env["CW_ALERT_WEBHOOK_SECRET"] = secret
    r = subprocess.run([sys.executable, "-m", "app.cli", "run"], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "CW_ALERT_WEBHOOK_SECRET" in r.stderr and "32 bytes" in r.stderr
    if secret:
        assert secret not in r.stderr  # the error never shows the secret
