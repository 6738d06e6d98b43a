"""`GET /health` (no auth): is the pipeline able to take and store data?"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CtxDep
from api.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, response_model_exclude_unset=True,
            summary="Liveness and dependencies (no auth)",
            description="`degraded` when the broker is disconnected, InfluxDB does not answer its ping, the "
                        "writer is retrying, intake is paused for lack of disk space, a local store cannot "
                        "write, or an alert receiver is down. Readings keep being spooled while degraded "
                        "(unless intake is paused).")
async def health(ctx: CtxDep) -> Health:
    ingest = ctx.ingest
    connected = ingest.mqtt_connected  # this process's consumer, or every MQTT worker
    mqtt = "disabled" if connected is None else "connected" if connected else "disconnected"
    influx_ok = await ingest.influx.ping()
    writer_ok = ingest.writers_ok
    routing = getattr(ctx.engine, "routing", None)  # set with CW_ROUTES_FILE (alerts/routing)
    receivers = routing.status() if routing is not None else None
    paused = bool(getattr(ingest, "intake_paused", False))
    storage = dict(getattr(ingest, "storage", {}) or {})
    disk = getattr(ingest, "disk", None)
    ok = (influx_ok and writer_ok and mqtt != "disconnected" and not paused
          and all(v == "ok" for v in storage.values()) and "down" not in (receivers or {}).values())
    return Health(status="ok" if ok else "degraded", mqtt=mqtt, influx="ok" if influx_ok else "unreachable",
                  spool_backlog=int(ingest.backlog_lines), writer="ok" if writer_ok else "retrying",
                  alerts="running" if ctx.engine is not None else "disabled",
                  intake="paused" if paused else "running",
                  disk_free_bytes=getattr(disk, "free_bytes", None), storage=storage,
                  **({"receivers": receivers} if receivers is not None else {}))
