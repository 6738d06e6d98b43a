"""`citywatch run`: the ingest pipeline assembled in one place, read top to bottom.

    MQTT (paho thread) ─┐
    HJ 212 (asyncio)  ──┼─ decode/validate ─ Committer (fsync group commit) ─ ack/answer
                        │                        ├─ Spool ── InfluxWriter ── InfluxDB
                        │                        ├─ DeadLetterStore
                        │                        └─ ValidatedStream ── alert engine
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from citywatch.errors import ConfigError
from citywatch.influx import InfluxClient
from citywatch.logs import redact_url
from citywatch.registry import Registry
from citywatch.settings import Settings
from citywatch.stream import ValidatedStream
from ingest.committer import Committer
from ingest.consumer import MqttConsumer
from ingest.deadletters import DeadLetterStore
from ingest.decode import Decoder
from ingest.disk import DiskWatch, deadletter_quota, usage, warn_threshold
from ingest.evidence import EvidenceKeeper, EvidenceStore, evidence_path
from ingest.metrics import IngestMetrics
from ingest.spool import Spool
from ingest.writer import InfluxWriter

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from ingest.hj212.gateway import Hj212Gateway

log = logging.getLogger("citywatch.service")


class IngestProcesses(Protocol):
    """MQTT ingest running in processes of its own (`ingest.workers.WorkerPool`), as this
    process sees them: their health for /health, their counters for /metrics, their
    validated readings for the alert engine."""

    @property
    def intake_paused(self) -> bool: ...
    @property
    def storage(self) -> dict[str, str]: ...
    @property
    def connected(self) -> bool: ...
    @property
    def backlog_lines(self) -> int: ...
    @property
    def writers_ok(self) -> bool: ...
    def totals(self) -> dict[str, float]: ...
    def collector(self) -> Collector: ...
    def open_stream(self, stream: ValidatedStream) -> None: ...
    async def supervise(self) -> None: ...
    def stop(self, timeout: float = 60.0) -> None: ...


class HttpServer(Protocol):
    """The HTTP API's server (uvicorn's `Server`), as the shutdown order needs it."""

    should_exit: bool

    async def serve(self) -> None: ...


@dataclass
class Attachments:
    """What the application layer runs beside the pipeline — the alert engine, the HTTP
    API — known here only by this shape, so that ingest never imports the layers above
    it. `run_service` starts the tasks with its own, stops the server first at shutdown
    (after `before_server_stop`, which ends open SSE streams), and calls `aclose` last."""

    tasks: list[Coroutine[Any, Any, None]] = field(default_factory=list)
    server: HttpServer | None = None
    before_server_stop: Callable[[], None] | None = None
    aclose: Callable[[], Awaitable[None]] | None = None


# Called once the pipeline is built and before the first commit, so that whatever it
# subscribes to the validated stream sees every reading.
Attach = Callable[["Ingest"], Attachments]


@dataclass
class Ingest:
    settings: Settings
    registry: Registry
    metrics: IngestMetrics
    decoder: Decoder
    spool: Spool
    deadletters: DeadLetterStore
    stream: ValidatedStream
    committer: Committer
    influx: InfluxClient
    writer: InfluxWriter
    consumer: MqttConsumer | None
    # Coroutines, not any awaitable: each becomes a task of the service's TaskGroup (the
    # Anys are a coroutine's send and yield types, which nobody uses).
    extra_tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    workers: IngestProcesses | None = None  # MQTT ingest in worker processes instead of `consumer`
    disk: DiskWatch | None = None
    alert_store: object | None = None  # the alert engine's AlertStore, for /health and /metrics
    evidence: EvidenceKeeper | None = None  # kept six-100 evidence (main process only)

    @property
    def intake_paused(self) -> bool:
        """This process's intake, or any MQTT worker's, is paused for lack of disk space."""
        return self.committer.paused_reason is not None or (
            self.workers is not None and self.workers.intake_paused)

    @property
    def storage(self) -> dict[str, str]:
        """Each local store: "ok", or what its writes fail with (they are retried)."""
        out = {"spool": "ok", "deadletters": "ok", "alert_state": "ok"}
        spool_err = self.committer.failing or self.writer.storage_failing
        if spool_err:
            out["spool"] = f"failing: {spool_err}"[:300]
        if self.deadletters.failing:
            out["deadletters"] = f"failing: {self.deadletters.failing}"[:300]
        if self.workers is not None:
            for k, v in self.workers.storage.items():
                if v != "ok" and out.get(k) == "ok":
                    out[k] = v
        failing = getattr(self.alert_store, "failing", None)
        if failing:
            out["alert_state"] = failing[:300]
        elif self.alert_store is None:
            out.pop("alert_state")
        return out

    @property
    def mqtt_connected(self) -> bool | None:
        """None when this process takes no MQTT input."""
        if self.workers is not None:
            return self.workers.connected
        return None if self.consumer is None else self.consumer.connected.is_set()

    @property
    def backlog_lines(self) -> int:
        return self.spool.backlog_lines + (self.workers.backlog_lines if self.workers is not None else 0)

    @property
    def writers_ok(self) -> bool:
        return self.writer.healthy and (self.workers is None or self.workers.writers_ok)

    def close(self) -> None:
        self.spool.close()
        self.deadletters.close()
        if self.evidence is not None:
            self.evidence.store.close()


def build_ingest(settings: Settings, *, mqtt: bool = True) -> Ingest:
    """Create every stage; nothing starts yet."""
    registry = Registry.load(settings.devices_file)
    metrics = IngestMetrics()
    decoder = Decoder(registry=registry, max_payload_bytes=settings.max_payload_bytes,
                      max_future_s=settings.max_future_s)
    spool = Spool(settings.spool_dir, segment_bytes=settings.spool_segment_bytes)
    deadletters = DeadLetterStore(settings.deadletter_path,
                                  max_bytes=deadletter_quota(settings, usage(settings.data_dir).total),
                                  retention_s=settings.deadletter_retention_days * 86400, metrics=metrics)
    stream = ValidatedStream()
    influx = InfluxClient(settings)
    evidence = EvidenceStore(evidence_path(settings.data_dir),
                             low_water_bytes=warn_threshold(settings, usage(settings.data_dir).total))
    writer = InfluxWriter(spool=spool, client=influx, deadletters=deadletters, metrics=metrics,
                          batch_lines=settings.write_batch_lines, interval_s=settings.write_interval_ms / 1000,
                          evidence=evidence)
    committer = Committer(spool=spool, deadletters=deadletters, stream=stream, metrics=metrics,
                          interval_s=settings.commit_interval_ms / 1000, max_items=settings.commit_max_messages,
                          on_commit=writer.notify)
    # A worker process in the shared subscription has its own session; a single process, or
    # the one ingest process beside the main one, keeps the plain session CW_MQTT_CLIENT_ID.
    shared = settings.worker_index is not None and settings.worker_shared
    client_id = f"{settings.mqtt_client_id}-{settings.worker_index}" if shared else settings.mqtt_client_id
    consumer = MqttConsumer(settings=settings, decoder=decoder, sink=committer, metrics=metrics,
                            client_id=client_id, shared=shared) if mqtt else None
    ingest = Ingest(settings, registry, metrics, decoder, spool, deadletters, stream, committer, influx, writer,
                    consumer)
    ingest.disk = DiskWatch(settings=settings, spool=spool, committer=committer, metrics=metrics,
                            deadletters=deadletters)
    if settings.worker_index is None:  # the ingest workers only mark; this process refreshes
        ingest.evidence = EvidenceKeeper(evidence, influx)
        ingest.extra_tasks.append(ingest.evidence.run)
    return ingest


async def _report(ingest: Ingest, every_s: float = 30.0) -> None:
    last = None
    while True:
        await asyncio.sleep(every_s)
        snap = ingest.metrics.snapshot()
        if ingest.workers is not None:
            for k, v in ingest.workers.totals().items():
                snap[k] = snap.get(k, 0) + v
            snap["citywatch_spool_backlog"] = ingest.backlog_lines
        summary = {k: snap.get(k, 0) for k in ("citywatch_received_total{source=mqtt}",
                                                 "citywatch_readings_accepted_total", "citywatch_rejected_total",
                                                 "citywatch_stored_total", "citywatch_spool_backlog")}
        if summary != last:
            log.info("counters %s", {k.removeprefix("citywatch_"): int(v) for k, v in summary.items()})
        last = summary


def _parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"listen address {text!r} must be host:port")
    return host.strip("[]"), int(port)


def _hj212_gateway(settings: Settings, ingest: Ingest, listen: str) -> Hj212Gateway:
    from ingest.hj212.gateway import gateway_from_settings

    host, port = _parse_listen(listen)
    return gateway_from_settings(settings, registry=ingest.registry, sink=ingest.committer, host=host, port=port,
                                 metrics=ingest.metrics.registry)


def check_hj212_startup(settings: Settings, listen: str | None) -> None:
    """Configuration errors of the HJ 212 gateway, before anything starts (exit 2): the
    registry loads (a monitor without a PW is an error there) and, without one, open mode
    was asked for."""
    if not listen:
        return
    from ingest.hj212.gateway import require_identity

    _parse_listen(listen)
    require_identity(Registry.load(settings.devices_file), open_mode=settings.hj212_open)


def _settle_heap() -> None:
    """Move everything built so far (imported modules, pydantic schemas, rules, loaded
    state: several hundred thousand objects) out of the garbage collector's sight.

    A full collection walks every tracked object; with the imports of a FastAPI, pydantic
    and numpy service that took 40–100 ms here, every few seconds under load — the
    largest part of the 99th-percentile alert latency. Frozen objects are never scanned
    (nor freed, but these live as long as the process).

    The young generation's threshold goes up from 700 allocations to 20,000: the MQTT
    input holds a whole read (up to ~1,300 messages) of fresh objects until they are
    committed, so at 700 they were scanned and promoted again and again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def run_service(settings: Settings, *, ingest: Ingest | None = None, started: asyncio.Event | None = None,
                      attach: Attach | None = None, hj212_listen: str | None = None, mqtt: bool = True,
                      watch: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None,
                      workers: IngestProcesses | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `watch(stop)` sets stop), then shut down in order:
    stop intake → commit and ack what is pending → flush the spool to InfluxDB (bounded).

    `workers`: MQTT ingest processes the caller started already (`citywatch run` starts
    them first thing, `app.service`); then this process takes no MQTT input itself.
    `attach`: what runs beside the pipeline (the alert engine and the API, `app.service`)."""
    try:
        check_hj212_startup(settings, hj212_listen or settings.hj212_listen)
        if ingest is None:
            # With workers, MQTT ingest happens in their processes, not in this one.
            ingest = build_ingest(settings, mqtt=mqtt and workers is None)
        if workers is not None:
            ingest.workers = workers
            ingest.metrics.registry.register(workers.collector())
        attached = attach(ingest) if attach is not None else Attachments()
        if workers is not None:
            workers.open_stream(ingest.stream)
    except BaseException:
        if workers is not None:
            workers.stop()
        raise
    listen = hj212_listen or settings.hj212_listen
    gateway = _hj212_gateway(settings, ingest, listen) if listen else None
    if ingest.disk is not None:  # what a disk pause holds back in this process (named in its log lines)
        ingest.disk.inputs = " and ".join(name for name, on in (("MQTT", ingest.consumer is not None),
                                                                 ("HJ 212", gateway is not None)) if on)
    server = attached.server
    _settle_heap()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await ingest.influx.ensure_database()
    except Exception as exc:  # InfluxDB down at start: keep accepting, the writer retries
        log.warning("InfluxDB not ready at start (%s); spooling until it is, the writer retries with backoff "
                    "(first retry within 1 s, then up to every 30 s)", exc)
    try:
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(ingest.writer.run(), name="writer")
            assert ingest.disk is not None
            tasks = [tg.create_task(ingest.disk.run(), name="disk"),
                     tg.create_task(_report(ingest), name="report")]
            tasks += [tg.create_task(factory()) for factory in ingest.extra_tasks]
            tasks += [tg.create_task(coro, name="attached") for coro in attached.tasks]
            await asyncio.sleep(0)  # let the tasks subscribe to the stream before any commit
            ingest.committer.start()
            if ingest.consumer is not None:
                ingest.consumer.start()
            log.info("citywatch running: data in %s, InfluxDB %s (%s), backlog %d lines", settings.data_dir,
                     redact_url(settings.influx_url), settings.influx_api, ingest.spool.backlog_lines)
            if ingest.workers is not None:
                tasks.append(tg.create_task(ingest.workers.supervise(), name="workers"))
            if watch is not None:
                tasks.append(tg.create_task(watch(stop), name="watch"))
            if gateway is not None:
                tasks.append(tg.create_task(gateway.serve(), name="hj212"))
                await gateway.wait_ready()
                log.info("HJ 212 gateway listening on %s (port %s)", listen, gateway.bound_port)
            if server is not None:
                api_task = tg.create_task(server.serve(), name="api")
                log.info("HTTP API and dashboard on %s://%s:%s/", "https" if settings.api_tls_cert else "http",
                         settings.api_host, settings.api_port)
            if started is not None:
                started.set()
            await stop.wait()
            log.info("shutting down: committing and acknowledging pending messages")
            if server is not None:
                if attached.before_server_stop is not None:
                    attached.before_server_stop()
                server.should_exit = True
                await api_task
            if ingest.consumer is not None:
                ingest.consumer.drain()
            if ingest.workers is not None:
                await asyncio.to_thread(ingest.workers.stop)
            if gateway is not None:
                for t in tasks:
                    if t.get_name() == "hj212":
                        t.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await t
            await asyncio.to_thread(ingest.committer.stop)
            if ingest.consumer is not None:
                await asyncio.to_thread(ingest.consumer.stop)
            ingest.writer.request_stop()
            await writer
            for t in tasks:
                t.cancel()
    finally:
        if ingest.workers is not None:  # already stopped, unless a task failed: stop them cleanly
            await asyncio.to_thread(ingest.workers.stop)
        flushed = await ingest.writer.flush(timeout_s=10.0)
        log.info("stopped; %s", "spool drained" if flushed else
                 f"{ingest.spool.backlog_lines} lines stay spooled for the next start")
        if attached.aclose is not None:
            await attached.aclose()
        await ingest.influx.aclose()
        ingest.close()
