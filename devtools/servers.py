"""Start real `mosquitto` and `influxd` on ephemeral ports with their data in a folder.

Used by the test fixtures, `citywatch bench` and `make demo`. Each server is a child
process that is stopped (SIGTERM, then SIGKILL) by `stop()`; `restart()` keeps port and
data, so tests can take a server away and bring it back.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from citywatch.errors import ConfigError

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INFLUXD_CANDIDATES = ("/usr/bin/influxd", "/usr/local/bin/influxd")
INSTALL_HINT = "apt-get install -y mosquitto influxdb"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str, candidates: tuple[str, ...]) -> str:
    path = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if path is None:
        raise ConfigError(f"{name} is not installed; run: {INSTALL_HINT}")
    return path


def _wait_http(url: str, ok_status: int, proc: subprocess.Popen, what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=0.5).status_code == ok_status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout}s")


def _wait_tcp(port: int, proc: subprocess.Popen, what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


@dataclass
class _Server:
    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    _started: bool = field(default=False, init=False, repr=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    def _wait_log(self, needle: str, what: str, timeout: float) -> None:
        """Wait until this start's log says `needle`: the server itself reports the port
        bound. A TCP connect alone could reach another test worker's server that took the
        port between `free_port` and this one's bind."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                if needle.encode() in f.read():
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{what} did not report {needle!r} within {timeout}s")

    def _command(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ready(self, timeout: float) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def start(self, timeout: float = 30.0) -> "_Server":
        # `free_port` releases the port before the server binds it, so another test worker
        # (pytest-xdist) may take it in between: a first start that finds its port in use
        # tries fresh ports. A restart keeps its ports (clients reconnect to them).
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except RuntimeError:
                tail = self.log_path.read_text(errors="replace")[-2000:].lower() if self.log_path.exists() else ""
                if self._started or attempt == 2 or "already in use" not in tail:
                    raise
                self._fresh_ports()
        raise AssertionError("unreachable")

    def _fresh_ports(self) -> None:
        self.port = free_port()

    def _start_once(self, timeout: float) -> "_Server":
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = self._command()
        log = open(self.log_path, "ab")
        self._log_offset = log.tell()  # this start's lines begin here (restarts append)
        # Own process group: a Ctrl-C aimed at the test runner does not hit the server first.
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._ready(timeout)
        except BaseException:
            # Its caller gets no server to stop: one that never became ready must not
            # outlive the failed start (it is in its own session, so nothing else ends it).
            self.stop(timeout=5.0)
            raise
        self._started = True
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Mosquitto(_Server):
    """A mosquitto with persistence on, unlimited queues for offline persistent sessions
    (the default 1000 silently drops), anonymous access on loopback for tests."""

    extra_config: str = ""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        conf = self.root / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "set_tcp_nodelay true\n"  # as deploy/mosquitto/mosquitto.conf: no Nagle delay on alerts
            # Started as root, mosquitto drops to user "mosquitto", which cannot write our
            # temp dir; keep the current user (ignored when not root).
            f"user {getpass.getuser()}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.root / 'data'}/\n"
            "autosave_interval 60\n"
            "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 0\n"
            "persistent_client_expiration 1d\n"
            + self.extra_config
        )
        return [find_binary("mosquitto", MOSQUITTO_CANDIDATES), "-c", str(conf)]

    def _ready(self, timeout: float) -> None:
        assert self.proc is not None
        self._wait_log(f"listen socket on port {self.port}.", "mosquitto", timeout)
        self._wait_log(" running", "mosquitto", timeout)
        _wait_tcp(self.port, self.proc, "mosquitto", timeout, self.log_path)


@dataclass
class Influxd(_Server):
    """InfluxDB 1.x (Debian's `influxdb`) with HTTP on an ephemeral port, no reporting."""

    rpc_port: int = field(default_factory=free_port)

    def _fresh_ports(self) -> None:
        self.port, self.rpc_port = free_port(), free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        conf = self.root / "influxdb.conf"
        conf.write_text(
            f'reporting-disabled = true\nbind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{self.root}/meta"\n'
            f'[data]\n  dir = "{self.root}/data"\n  wal-dir = "{self.root}/wal"\n  query-log-enabled = false\n'
            '  max-series-per-database = 0\n  max-values-per-tag = 0\n'
            f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            '  max-body-size = 0\n'
            '[monitor]\n  store-enabled = false\n'
            '[continuous_queries]\n  enabled = false\n'
            '[subscriber]\n  enabled = false\n'
        )
        return [find_binary("influxd", INFLUXD_CANDIDATES), "-config", str(conf)]

    def _ready(self, timeout: float) -> None:
        assert self.proc is not None
        self._wait_log(f"addr=127.0.0.1:{self.port} ", "influxd", timeout)
        _wait_http(f"{self.url}/ping", 204, self.proc, "influxd", timeout, self.log_path)


@dataclass
class VictoriaMetrics(_Server):
    """Debian's `victoria-metrics`: accepts InfluxDB line protocol on `/api/v2/write`
    (org and token ignored), so the v2 write dialect is exercised against a real server.
    What arrived is read back from `/api/v1/export` (series named `measurement_field`)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [find_binary("victoria-metrics", ("/usr/bin/victoria-metrics",)),
                f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.root / 'data'}",
                "-retentionPeriod=100y", "-dedup.minScrapeInterval=1ms", "-search.latencyOffset=0s",
                "-loggerLevel=WARN"]

    def _ready(self, timeout: float) -> None:
        assert self.proc is not None
        _wait_http(f"{self.url}/health", 200, self.proc, "victoria-metrics", timeout, self.log_path)

    def count(self, series: str) -> int:
        """Samples stored for `series` (e.g. dust_pm10), duplicates removed by timestamp."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=5)
        r = httpx.get(f"{self.url}/api/v1/export", params={"match[]": series, "start": "0"}, timeout=30)
        r.raise_for_status()
        stamps: set[tuple[str, int]] = set()
        for line in r.text.splitlines():
            if line.strip():
                import json

                doc = json.loads(line)
                key = json.dumps(doc["metric"], sort_keys=True)
                stamps.update((key, t) for t in doc["timestamps"])
        return len(stamps)
