"""`make demo`: the whole system on this machine, lively, until Ctrl-C.

Starts mosquitto and influxd with their data under ./var/ (fresh each run; the previous
run's data is moved to ./var.prev/), `citywatch run` with the API
and dashboard (fresh demo tokens), and the simulators: first the `dust-episode` scenario
replayed ten times faster from shortly before its episode (so an alert appears within a
minute or two), then a `normal-day` fleet in real time. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from devtools.servers import Influxd, Mosquitto, free_port

VAR = Path("var")
SPEED = 10


def fresh_var(var: Path) -> Path | None:
    """Start the demo on empty servers and state; the previous run's data is kept, moved
    to `<var>.prev` (replacing an older one). Why: the demo replays this morning's dust
    episode, and a second run the same day would find the alert engine already past that
    morning (its state is durable, as it should be), so no alert would fire."""
    if not var.exists() or not any(var.iterdir()):
        var.mkdir(exist_ok=True)
        return None
    prev = var.with_name(var.name + ".prev")
    shutil.rmtree(prev, ignore_errors=True)
    var.rename(prev)
    var.mkdir()
    return prev


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _episode_start(tz: ZoneInfo) -> datetime:
    """Five simulated minutes before the 10:30 episode, on the latest day where that is past."""
    now = datetime.now(tz)
    start = now.replace(hour=10, minute=25, second=0, microsecond=0)
    return start if start < now - timedelta(minutes=30) else start - timedelta(days=1)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM or a closed terminal stops everything, as Ctrl-C does


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    tz = ZoneInfo(os.environ.get("CW_TZ", "Asia/Shanghai"))
    prev = fresh_var(VAR)
    if prev is not None:
        print(f"each demo starts fresh; the previous run's data is in {prev}/")
    mosquitto = Mosquitto(VAR / "mosquitto", port=_port(1883))
    influxd = Influxd(VAR / "influxdb", port=_port(8086))
    api_port = _port(8000)
    tokens = {role: secrets.token_urlsafe(18) for role in ("admin", "operator", "viewer")}
    env = {**os.environ,
           "CW_MQTT_URL": mosquitto.url, "CW_INFLUX_URL": influxd.url, "CW_DATA_DIR": str(VAR / "citywatch"),
           "CW_API_PORT": str(api_port), "CW_LOG_FORMAT": "text",
           "CW_API_TOKENS": ",".join(f"{t}={role}" for role, t in tokens.items())}
    (VAR / "demo-tokens.txt").write_text("".join(f"{role}\t{t}\n" for role, t in tokens.items()))
    os.chmod(VAR / "demo-tokens.txt", 0o600)
    children: list[subprocess.Popen] = []
    service_log = open(VAR / "service.log", "ab")

    def spawn(*args: str, log=None) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, stdout=log, stderr=log)
        children.append(p)
        return p

    try:
        print(f"starting mosquitto on {mosquitto.port} and influxd on {influxd.port} (data in {VAR}/)")
        mosquitto.start()
        influxd.start()
        service = spawn("run", log=service_log)
        url = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
            if service.poll() is not None:
                print(f"citywatch run exited; see {VAR}/service.log", file=sys.stderr)
                return 1
        start = _episode_start(tz)
        catch_up_s = (datetime.now(tz) - start).total_seconds() * SPEED / (SPEED - 1) * 0.9
        print(f"""
  citywatch is running.
    dashboard   {url}/          (token below; zh-CN, English toggle at the top)
    OpenAPI     {url}/openapi.json
    tokens      admin={tokens['admin']}
                operator={tokens['operator']}
                viewer={tokens['viewer']}
    logs        {VAR}/service.log
  Simulators: dust-episode at {SPEED}x from {start:%Y-%m-%d %H:%M} (PM10 alert in about a minute),
              then normal-day in real time.  Ctrl-C stops everything.
""", flush=True)
        sim = spawn("simulate", "--scenario", "dust-episode", "--sites", "4", "--speed", str(SPEED),
                    "--start", start.strftime("%Y-%m-%dT%H:%M:%S"), "--duration", f"{int(min(catch_up_s, 86400))}",
                    "--no-progress", "--client-id", "demo-episode")
        while True:
            time.sleep(1)
            if service.poll() is not None:
                print(f"citywatch run exited with {service.returncode}; see {VAR}/service.log", file=sys.stderr)
                return 1
            if sim.poll() is not None:
                now = datetime.now(tz)
                sim = spawn("simulate", "--scenario", "normal-day", "--sites", "6", "--speed", "1", "--start",
                            now.strftime("%Y-%m-%dT%H:%M:%S"), "--duration", "86400", "--no-progress",
                            "--client-id", "demo-normal")
    except KeyboardInterrupt:
        print("\nstopping ...")
        return 0
    finally:
        for p in reversed(children):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in children:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        influxd.stop()
        mosquitto.stop()
        service_log.close()


if __name__ == "__main__":
    sys.exit(main())
