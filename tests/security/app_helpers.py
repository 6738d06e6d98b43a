"""Helpers for the application-security tests: `citywatch run` with its API on a free
loopback port, against the real broker and InfluxDB of the session fixtures."""

from __future__ import annotations

import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx

from devtools.servers import free_port
from tests.support import ServiceProcess, service_env

TOKENS = {"viewer": "viewer-token-0001", "operator": "operator-token-0002", "admin": "admin-token-0003",
          "viewer2": "viewer-token-0004"}
TOKEN_ENV = ",".join(f"{t}={role.rstrip('2')}" for role, t in TOKENS.items())


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def clean_environ() -> dict[str, str]:
    """The runner's environment without any CW_* (a developer's own settings must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CW_")}


@contextmanager
def api_service(tmp_path: Path, *, mqtt_url: str, influx_url: str, **extra: str):
    """`citywatch run` with the API on 127.0.0.1:<free port>; yields (base URL, service, database)."""
    port = free_port()
    database = f"sec_{uuid.uuid4().hex[:10]}"
    env = service_env(mqtt_url=mqtt_url, influx_url=influx_url, data_dir=tmp_path / "data", database=database,
                      api_tokens=TOKEN_ENV, api_host="127.0.0.1", api_port=str(port), **extra)
    service = ServiceProcess(env, tmp_path / "service.log")
    service.env = {**clean_environ(), **env}
    service.start()
    try:
        service.wait_log("HTTP API and dashboard on", timeout=60)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, service.log()[-2000:]
            time.sleep(0.1)
        yield url, service, database
    finally:
        service.stop()
