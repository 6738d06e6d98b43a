"""A recording HTTP proxy in front of a real influxd: counts deliveries, not points.

A point written twice overwrites itself, so counting points in InfluxDB proves "stored
once", never "delivered once". The proxy forwards every request to the real server
unchanged and keeps, for each write InfluxDB accepted (2xx), the lines it carried: a
reading's delivery count is how many accepted writes held its line.

`fail_next` answers the next N writes with 503 without forwarding them (InfluxDB
overloaded); `on_write(lines, status)` is called once InfluxDB has answered a write and
before the answer goes back to the client — the moment the writer may learn of it.
"""

from __future__ import annotations

import gzip
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests.durability import line_key

WRITE_PATHS = ("/write", "/api/v2/write")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


class RecordingInfluxProxy:
    def __init__(self, upstream: str, *, on_write: Callable[[list[bytes], int], None] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.on_write = on_write
        self.fail_next = 0
        self.writes: list[tuple[int, list[bytes]]] = []  # (status, lines) of every write request
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                is_write = self.path.split("?", 1)[0] in WRITE_PATHS
                lines: list[bytes] = []
                if is_write:
                    plain = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
                    lines = [line for line in plain.split(b"\n") if line]
                    with proxy._lock:
                        failing = proxy.fail_next > 0
                        proxy.fail_next -= failing
                    if failing:
                        proxy._record(lines, 503)
                        self._answer(503, {"Content-Type": "application/json"}, b'{"error":"injected overload"}')
                        return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}}
                try:
                    resp = proxy._client.request(self.command, proxy.upstream + self.path, content=body,
                                                 headers=headers)
                except httpx.HTTPError:
                    self._answer(502, {}, b"upstream unreachable")
                    return
                if is_write:
                    proxy._record(lines, resp.status_code)
                self._answer(resp.status_code, {k: v for k, v in resp.headers.items() if k.lower() not in _HOP},
                             resp.content)

            def _answer(self, status: int, headers: dict[str, str], content: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="influx-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _record(self, lines: list[bytes], status: int) -> None:
        if self.on_write is not None:
            self.on_write(lines, status)
        with self._lock:
            self.writes.append((status, lines))

    def accepted_lines(self, measurement: bytes | None = None) -> list[bytes]:
        """Every line of every write InfluxDB accepted, once per delivery."""
        with self._lock:
            writes = list(self.writes)
        return [line for status, lines in writes if 200 <= status < 300 for line in lines
                if measurement is None or line.split(b",", 1)[0] == measurement]

    def deliveries(self, measurement: bytes = b"dust") -> Counter[tuple[str, int]]:
        """(device, timestamp ms) -> how many accepted writes carried that reading."""
        return Counter(line_key(line) for line in self.accepted_lines(measurement))

    def __enter__(self) -> "RecordingInfluxProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
