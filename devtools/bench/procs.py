"""Processes the benchmark starts and measures: CPU and RSS from /proc (a process and its
descendants), the service and the baseline as logged subprocesses, MQTT sessions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.bench.common import ROOT, progress

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _one_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the service's ingest workers, when it has them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process and its live descendants, in seconds."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            total += _one_cpu_s(p)
        except (OSError, ValueError):
            if p == pid:
                raise
    return total


def proc_peak_rss_mb(pid: int) -> float | None:
    """Sum of the peak RSS of a process and its live descendants."""
    total = None
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total = (total or 0.0) + int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def proc_rss_mb(pid: int) -> float:
    """Current RSS (VmRSS) of a process and its live descendants."""
    total = 0.0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def own_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Child:
    """A subprocess with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    log_offset: int = 0

    def start(self) -> "Child":
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self, since_start: bool = False) -> str:
        try:
            with open(self.log_path, "rb") as f:
                if since_start:
                    f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log()[-2000:]}")

    def wait_log(self, text: str, timeout: float = 60.0, count: int = 1) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log(since_start=True).count(text) >= count:
                return time.monotonic()
            self.check_alive()
            time.sleep(0.02)
        raise RuntimeError(f"{self.name}: {text!r} not logged within {timeout}s: {self.log()[-2000:]}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                progress(f"{self.name} did not stop on SIGTERM within {timeout:.0f}s; killing it")
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc


def _clean_env() -> dict[str, str]:
    """The caller's environment without any CW_* setting: the bench defines its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CW_")}


def service_child(root: Path, *, mqtt_url: str, influx_url: str, database: str, client_id: str,
                  extra: dict[str, str] | None = None) -> Child:
    root.mkdir(parents=True, exist_ok=True)
    env = _clean_env() | {"CW_MQTT_URL": mqtt_url, "CW_INFLUX_URL": influx_url, "CW_INFLUX_DATABASE": database,
                          "CW_DATA_DIR": str(root / "data"), "CW_MQTT_CLIENT_ID": client_id,
                          "CW_LOG_FORMAT": "text", "CW_LOG_LEVEL": "INFO"} | (extra or {})
    return Child("service", [sys.executable, "-m", "app.cli", "run"], env, root / "service.log")


def baseline_child(root: Path, *, mqtt_url: str, influx_url: str, database: str, client_id: str) -> Child:
    root.mkdir(parents=True, exist_ok=True)
    return Child("baseline", [sys.executable, "-m", "devtools.baseline", "--mqtt-url", mqtt_url,
                              "--influx-url", influx_url, "--database", database, "--client-id", client_id],
                 _clean_env(), root / "baseline.log")


def drop_session(mqtt_url: str, client_id: str, ca_file: str | None = None) -> None:
    """Delete a persistent session (connect with clean start, disconnect): once measured, a
    subscriber's offline session would make the broker queue every later message for it,
    which slows the broker for the runs that follow."""
    import paho.mqtt.client as mqtt

    from citywatch.settings import MqttAddress

    a = MqttAddress.parse(mqtt_url)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if a.username:
        c.username_pw_set(a.username, a.password)
    if a.tls:
        c.tls_set(ca_certs=ca_file)
    try:
        c.connect(a.host, a.port, clean_start=True)
        c.loop_start()
        deadline = time.monotonic() + 10
        while not c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        c.disconnect()
        c.loop_stop()
    except OSError as exc:
        progress(f"could not drop the session {client_id}: {exc}")


def create_session(child: Child) -> None:
    """Start a subscriber once so the broker keeps its persistent session, then stop it."""
    child.start()
    try:
        child.wait_log("connected to broker")
        time.sleep(1.0)  # SUBSCRIBE is sent right after CONNACK; give it time to be processed
    finally:
        child.stop()
