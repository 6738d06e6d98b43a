"""The API over HTTPS (CW_API_TLS_CERT / CW_API_TLS_KEY) from a real `citywatch run`, and the
warning for an API bound beyond loopback without TLS."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from devtools.servers import free_port
from tests.security.app_helpers import TOKEN_ENV, auth, clean_environ
from tests.support import ServiceProcess, service_env

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "api-cert.pem", tmp / "api-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.mark.integration
def test_api_is_served_over_https_only(broker, influx, tmp_path):
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = service_env(mqtt_url=broker.url, influx_url=influx.url, data_dir=tmp_path / "data", database="sec_tls",
                      api_tokens=TOKEN_ENV, api_port=str(port), api_tls_cert=str(cert), api_tls_key=str(key))
    service = ServiceProcess(env, tmp_path / "service.log")
    service.env = {**clean_environ(), **env}
    service.start()
    try:
        service.wait_log(f"HTTP API and dashboard on https://127.0.0.1:{port}/", timeout=60)
        # The log line comes as uvicorn starts; its socket may listen a moment later.
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/v1/me", headers=auth("viewer"),
                              verify=ssl.create_default_context(cafile=str(cert)), timeout=10)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, service.log()[-2000:]
                time.sleep(0.2)
        assert r.status_code == 200 and r.json()["role"] == "viewer"
        # a bearer token sent in clear text gets no HTTP answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer viewer-token-0001\r\n\r\n")
            answer = b""
            try:
                while chunk := s.recv(4096):
                    answer += chunk
            except OSError:
                pass
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:100]
        assert b"viewer" not in answer
        assert "without TLS" not in service.log()
    finally:
        service.stop()


def _server_log(caplog, **settings_kw):
    from citywatch.settings import Settings
    from app.service import api_server

    settings = Settings(api_tokens=SecretStr(TOKEN_ENV), **settings_kw)
    with caplog.at_level(logging.WARNING, logger="citywatch.service"):
        server = api_server(settings, ingest=None, engine=None)  # built, never started: nothing is bound
    assert server is not None
    return [r.getMessage() for r in caplog.records if r.name == "citywatch.service"], server


def test_non_loopback_api_without_tls_is_a_clear_warning(caplog, tmp_path):
    messages, server = _server_log(caplog, api_host="0.0.0.0", data_dir=tmp_path)
    assert any("without TLS" in m and "0.0.0.0" in m and "CW_API_TLS_CERT" in m for m in messages), messages
    assert server.config.limit_concurrency == 1000 and server.config.timeout_keep_alive == 5
    caplog.clear()
    messages, _ = _server_log(caplog, api_host="127.0.0.1", data_dir=tmp_path)
    assert not any("without TLS" in m for m in messages)
    cert, key = self_signed(tmp_path)
    caplog.clear()
    messages, server = _server_log(caplog, api_host="0.0.0.0", api_tls_cert=cert, api_tls_key=key,
                                   data_dir=tmp_path)
    assert not any("without TLS" in m for m in messages)
    assert server.config.ssl_certfile == str(cert) and server.config.ssl_keyfile == str(key)
