"""Local stand-ins for the chat platforms that check requests the way each documents it.

Each is a real HTTP server on 127.0.0.1 (stdlib, its own thread). A request that breaks the
platform's rules gets the platform's error answer and is recorded in `rejected`; a good
one is recorded in `accepted` (parsed body, server-clock time). Their clock is injectable
so a test with a simulated clock checks timestamp windows and rate limits against it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Clock = Callable[[], float]


@dataclass
class Received:
    at: float
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes
    body: Any


class Platform:
    """Base: a threaded HTTP server; subclasses implement `check(req) -> (status, answer)`."""

    def __init__(self, *, clock: Clock = time.time, rate: tuple[int, float] | None = None, fail_with: int = 0):
        self.clock = clock
        self.rate = rate
        self.fail_with = fail_with  # an HTTP status to answer every request with (a down receiver)
        self.accepted: list[Received] = []
        self.rejected: list[tuple[Received, Any]] = []
        self.lock = threading.Lock()
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                parts = urlsplit(self.path)
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                req = Received(platform.clock(), parts.path, parse_qs(parts.query, keep_blank_values=True),
                               {k.lower(): v for k, v in self.headers.items()}, raw, body)
                status, answer = platform._answer(req)
                data = json.dumps(answer, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Platform":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _answer(self, req: Received) -> tuple[int, Any]:
        with self.lock:
            if self.fail_with:
                self.rejected.append((req, self.fail_with))
                return self.fail_with, {"error": "down"}
            status, answer, ok = self.check(req)
            if ok and self.rate is not None:
                n, per_s = self.rate
                recent = [r for r in self.accepted if r.at > req.at - per_s]
                if len(recent) >= n:
                    status, answer, ok = self.too_fast()
            (self.accepted.append(req) if ok else self.rejected.append((req, answer)))
            return status, answer

    def check(self, req: Received) -> tuple[int, Any, bool]:
        raise NotImplementedError

    def too_fast(self) -> tuple[int, Any, bool]:
        raise NotImplementedError

    def max_in_window(self, per_s: float) -> int:
        """The most requests accepted within any `per_s` seconds (sliding, server clock)."""
        times = sorted(r.at for r in self.accepted)
        best = 0
        for i, t in enumerate(times):
            best = max(best, sum(1 for u in times[i:] if u < t + per_s))
        return best


class DingTalkRobot(Platform):
    """DingTalk custom robot with 加签: access_token, timestamp within 1 hour, HMAC sign."""

    def __init__(self, token: str = "tok123", secret: str = "SECabc+/=xyz", **kw: Any):
        kw.setdefault("rate", (20, 60.0))
        super().__init__(**kw)
        self.token, self.secret = token, secret

    @property
    def url(self) -> str:
        return f"{self.base}/robot/send?access_token={self.token}"

    def too_fast(self):
        return 200, {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}, False

    def check(self, req: Received):
        if req.path != "/robot/send" or req.query.get("access_token") != [self.token]:
            return 200, {"errcode": 300001, "errmsg": "token is not exist"}, False
        ts, sign = req.query.get("timestamp", [""])[0], req.query.get("sign", [""])[0]
        if not ts.isdigit() or abs(int(ts) - self.clock() * 1000) > 3600_000:
            return 200, {"errcode": 310000, "errmsg": "invalid timestamp"}, False
        expected = base64.b64encode(hmac.new(self.secret.encode(), f"{ts}\n{self.secret}".encode(),
                                             hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(sign, expected):
            return 200, {"errcode": 310000, "errmsg": "sign not match"}, False
        b = req.body
        ok = (isinstance(b, dict) and b.get("msgtype") == "markdown" and isinstance(b.get("markdown"), dict)
              and isinstance(b["markdown"].get("title"), str) and b["markdown"]["title"]
              and isinstance(b["markdown"].get("text"), str) and b["markdown"]["text"]
              and isinstance(b.get("at", {}), dict)
              and all(isinstance(m, str) for m in b.get("at", {}).get("atMobiles", []))
              and isinstance(b.get("at", {}).get("isAtAll", False), bool))
        if not ok:
            return 200, {"errcode": 40035, "errmsg": "缺少参数 json"}, False
        return 200, {"errcode": 0, "errmsg": "ok"}, True


class WeComRobot(Platform):
    """WeCom group robot: key in the URL, markdown content at most 4096 bytes."""

    def __init__(self, key: str = "wk-1", **kw: Any):
        kw.setdefault("rate", (20, 60.0))
        super().__init__(**kw)
        self.key = key

    @property
    def url(self) -> str:
        return f"{self.base}/cgi-bin/webhook/send?key={self.key}"

    def too_fast(self):
        return 200, {"errcode": 45009, "errmsg": "api freq out of limit"}, False

    def check(self, req: Received):
        if req.path != "/cgi-bin/webhook/send" or req.query.get("key") != [self.key]:
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}, False
        b = req.body
        if not (isinstance(b, dict) and b.get("msgtype") == "markdown" and isinstance(b.get("markdown"), dict)
                and isinstance(b["markdown"].get("content"), str) and b["markdown"]["content"]):
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}, False
        if len(b["markdown"]["content"].encode()) > 4096:
            return 200, {"errcode": 45002, "errmsg": "content size out of limit"}, False
        return 200, {"errcode": 0, "errmsg": "ok"}, True


class FeishuBot(Platform):
    """Feishu custom bot with 签名校验: timestamp (s) within 1 hour, sign over an empty
    message keyed with "timestamp\\nsecret", interactive card."""

    def __init__(self, hook: str = "hook-9", secret: str = "fsecret", **kw: Any):
        kw.setdefault("rate", (100, 60.0))
        super().__init__(**kw)
        self.hook, self.secret = hook, secret

    @property
    def url(self) -> str:
        return f"{self.base}/open-apis/bot/v2/hook/{self.hook}"

    def too_fast(self):
        return 200, {"code": 9499, "msg": "too many request"}, False

    def check(self, req: Received):
        if req.path != f"/open-apis/bot/v2/hook/{self.hook}":
            return 404, {"code": 19001, "msg": "param invalid: incoming webhook access token invalid"}, False
        b = req.body if isinstance(req.body, dict) else {}
        ts = str(b.get("timestamp", ""))
        if not ts.isdigit() or abs(int(ts) - self.clock()) > 3600:
            return 200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}, False
        key = f"{ts}\n{self.secret}".encode()
        expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(str(b.get("sign", "")), expected):
            return 200, {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}, False
        card = b.get("card")
        ok = (b.get("msg_type") == "interactive" and isinstance(card, dict)
              and isinstance(card.get("header", {}).get("title", {}).get("content"), str)
              and isinstance(card.get("elements"), list) and card["elements"]
              and all(isinstance(e, dict) and "tag" in e for e in card["elements"]))
        if not ok:
            return 200, {"code": 19002, "msg": "params error"}, False
        return 200, {"code": 0, "msg": "success", "data": {}}, True


class CitywatchWebhook(Platform):
    """A receiver of the citywatch webhook that checks X-Citywatch-Signature."""

    def __init__(self, secret: str = "whsecret", **kw: Any):
        super().__init__(**kw)
        self.secret = secret

    @property
    def url(self) -> str:
        return f"{self.base}/hook"

    def check(self, req: Received):
        expected = "sha256=" + hmac.new(self.secret.encode(), req.raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(req.headers.get("x-citywatch-signature", ""), expected):
            return 401, {"error": "bad signature"}, False
        return 200, {"ok": True}, True


class SmsGateway(Platform):
    """A provider's JSON API: `{"apikey": ..., "mobiles": [...], "content": ...}` with a header key."""

    def __init__(self, apikey: str = "sms-key", **kw: Any):
        super().__init__(**kw)
        self.apikey = apikey

    @property
    def url(self) -> str:
        return f"{self.base}/sms/send"

    def check(self, req: Received):
        b = req.body
        if req.headers.get("x-api-key") != self.apikey:
            return 401, {"code": 401, "message": "bad key"}, False
        if not (isinstance(b, dict) and isinstance(b.get("mobiles"), list) and isinstance(b.get("content"), str)
                and b["content"]):
            return 200, {"code": 400, "message": "bad request"}, False
        return 200, {"code": 0, "message": "accepted"}, True
