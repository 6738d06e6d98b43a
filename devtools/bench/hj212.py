"""HJ 212 mode of the benchmark: simulated monitors over TCP to the service's gateway, one
dialect after another."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from devtools.bench.common import progress
from devtools.bench.env import Env
from devtools.bench.procs import proc_cpu_s, service_child
from devtools.servers import free_port
from ingest.hj212.testing import fleet_registry, run_fleet
from simulators.hj212 import registry_toml


def hj212_run(env: Env, monitors: int, packets_each: int, dialects: tuple[str, ...] = ("2017",)
              ) -> dict[str, Any]:
    """HJ 212 mode: for each dialect in turn, `monitors` TCP connections to the gateway
    inside the service, each sending `packets_each` real-time uploads (answered dialects
    wait for each durable CN=9014; 2005 sends without answers). readings/s = readings
    stored / seconds from the first connection until all are queryable in InfluxDB; CPU =
    the service's (main process and its MQTT child) CPU seconds over that time. The
    top-level figures are the first dialect's (2017), `hj212_dialects` has each."""
    root = env.root / "hj212"
    root.mkdir(parents=True, exist_ok=True)
    registry = fleet_registry(monitors)
    (root / "devices.toml").write_text(registry_toml(registry), encoding="utf-8")
    port = free_port()
    db = "hj212"
    svc = env.track(service_child(root / "service", mqtt_url=env.mosquitto.url, influx_url=env.influxd.url,
                                  database=db, client_id="bench-svc-hj212",
                                  extra={"CW_DEVICES_FILE": str(root / "devices.toml"),
                                         "CW_HJ212_LISTEN": f"127.0.0.1:{port}",
                                         # the whole simulated fleet connects from 127.0.0.1
                                         "CW_HJ212_MAX_PER_ADDRESS": str(max(monitors, 256)),
                                         "CW_INGEST_WORKERS": str(env.workers)}))
    svc.start()
    runs: list[dict[str, Any]] = []

    def count() -> int:
        series = env.influx.query(db, 'SELECT count("pm10") FROM "dust"')
        rows = (series[0].get("series") or [{}])[0].get("values") if series else None
        return int(rows[0][1]) if rows else 0

    try:
        svc.wait_log("HJ 212 gateway listening")
        svc.wait_log("connected to broker")  # the MQTT ingest process has started too: the box is quiet
        stored_before = 0
        for k, dialect in enumerate(dialects):
            progress(f"hj212 {dialect}: {monitors:,} monitors x {packets_each} readings")
            # Each dialect a day earlier than the one before: no point overwrites another's.
            start = datetime.now(timezone.utc) - timedelta(days=k, seconds=30.0 * packets_each + 600)
            assert svc.proc is not None
            cpu0, t0 = proc_cpu_s(svc.proc.pid), time.monotonic()
            result = asyncio.run(run_fleet("127.0.0.1", port, monitors=monitors, packets_each=packets_each,
                                           registry=registry, start=start, dialect=dialect))
            expected = result.sent - len(result.errors)
            counted = 0
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                counted = count() - stored_before
                if counted >= expected:
                    break
                time.sleep(0.1)
            elapsed, cpu_s = time.monotonic() - t0, proc_cpu_s(svc.proc.pid) - cpu0
            stored_before += counted
            runs.append({"dialect": dialect, "readings": result.sent, "packets": result.packets,
                         "answered": result.answered, "stored": counted, "lost": max(0, result.sent - counted),
                         "errors": len(result.errors), "seconds": round(elapsed, 2), "cpu_s": round(cpu_s, 2),
                         "readings_per_s": round(counted / elapsed, 1) if elapsed else None,
                         "readings_per_cpu_s": round(counted / cpu_s, 1) if cpu_s > 0 else None})
    finally:
        svc.stop()
    first = runs[0]
    return {"hj212_monitors": monitors, "hj212_packets": first["packets"], "hj212_answered": first["answered"],
            "hj212_lost": sum(r["lost"] for r in runs), "hj212_errors": sum(r["errors"] for r in runs),
            "hj212_readings_per_s": first["readings_per_s"], "hj212_readings_per_cpu_s": first["readings_per_cpu_s"],
            "hj212_dialects": runs}
