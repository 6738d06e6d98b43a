"""`devtools.servers`: the launchers the tests, the bench and the demo share."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.servers import _Server, _wait_tcp


@dataclass
class _NeverListens(_Server):
    """Runs (a sleeping Python), but never listens on its port."""

    pid: int | None = None

    def _command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]

    def _ready(self, timeout: float) -> None:
        self.pid = self.proc.pid
        _wait_tcp(self.port, self.proc, "sleeper", timeout, self.log_path)


def test_a_server_that_never_becomes_ready_is_stopped_not_leaked(tmp_path: Path) -> None:
    """It runs in a session of its own, so nothing else would end it. A suite run under
    libfaketime, where mosquitto's readiness checks failed, left 19 of them running."""
    server = _NeverListens(tmp_path / "srv")
    with pytest.raises(RuntimeError, match="did not listen"):
        server.start(timeout=0.5)
    assert server.pid is not None and server.proc is None
    assert not os.path.exists(f"/proc/{server.pid}"), "the server process outlived its failed start"


def test_a_taken_port_is_not_mistaken_for_the_server(tmp_path):
    """Between `free_port` and the server's bind another test worker may take the port: the
    launcher must not take that worker's listener for its own server (a TCP connect alone
    would), but start on fresh ports."""
    import socket

    from devtools.servers import Influxd, Mosquitto

    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        for server in (Mosquitto(tmp_path / "m", port=taken), Influxd(tmp_path / "i", port=taken)):
            server.start()
            try:
                assert server.port != taken
                assert server.proc is not None and server.proc.poll() is None
            finally:
                server.stop()
