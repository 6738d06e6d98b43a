"""MQTT ingest in processes of its own, beside the alert engine.

Python runs one thread at a time per process, so MQTT ingest and the alert engine in one
process share one core. By default (`CW_INGEST_PROCESS=true`, one worker) `citywatch run`
starts one ingest process with the plain persistent session named by CW_MQTT_CLIENT_ID —
to the broker exactly the session a single process would have — and keeps the alert
engine, the API and the HJ 212 gateway in the main process: two cores.

With `CW_INGEST_WORKERS` > 1, `citywatch run` starts that many worker processes; each runs the
same pipeline as the single-process service (consumer → decode → committer → its own
spool → writer) with its own persistent session `<client id>-<k>` in the shared
subscription `$share/citywatch/...`, so the broker splits the stream between them and
queues each worker's share while it is down.

The main process keeps the alert engine, the API, the HJ 212 gateway and its own spool.
Each worker forwards its validated readings over a pipe (after they are durable), and a
counters snapshot every second. The pipe is the backpressure: when the alert engine
falls behind, the worker's committer waits, exactly as in one process.

A worker that dies is started again; if the main process dies, the kernel kills the
workers (PR_SET_PDEATHSIG) — harmless, since nothing is acknowledged before it is on disk.
The number of sessions never shrinks by itself: a session left without its worker would
keep receiving its share of the stream, so the count is recorded in the data dir and the
larger of that and the setting is used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from multiprocessing.connection import Connection

from citywatch.settings import Settings
from citywatch.stream import ValidatedStream
from ingest.worker_process import decode_batch, is_total, worker_main

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("citywatch.ingest.workers")


def worker_count(settings: Settings) -> int:
    """Configured workers, but never fewer than shared sessions that earlier runs created
    (1 means the single process's plain session)."""
    wanted = settings.effective_ingest_workers
    record = settings.data_dir / "mqtt-sessions.json"
    try:
        before = int(json.loads(record.read_text())["sessions"])
    except (FileNotFoundError, ValueError, KeyError):
        before = 0
    if before > 1 and wanted == 1:
        log.warning("earlier runs used %d ingest workers with a shared subscription; keeping %d so that no "
                    "session is left holding its share of the stream", before, before)
    if before > wanted:
        log.warning("%d MQTT ingest sessions exist from earlier runs; running %d workers instead of %d so that no "
                    "session is left holding its share of the stream", before, before, wanted)
    n = max(wanted, before)
    if n != before:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sessions": n}))
        os.replace(tmp, record)
    return n


def start_ingest_processes(settings: Settings, *, forward: bool) -> "WorkerPool | None":
    """Start the MQTT ingest processes `citywatch run` runs beside itself, or None when MQTT
    ingest stays in this process (CW_INGEST_PROCESS=false and one worker, or this is a
    worker). Called before the main process imports and builds the rest, so that the
    workers' start-up (a fresh interpreter each) overlaps with its own."""
    if settings.worker_index is not None:
        return None
    count = worker_count(settings)
    if count == 1 and not settings.ingest_process:
        return None
    pool = WorkerPool(settings, count=count, forward=forward, shared=count > 1)
    pool.start()
    return pool


# -- the main process's side ------------------------------------------------------------
@dataclass
class _Worker:
    index: int
    process: mp.process.BaseProcess | None = None
    conn: Connection | None = None
    # The worker's last report over the pipe: bools, numbers and the "storage" dict mixed.
    snapshot: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0


class WorkerPool:
    """The MQTT ingest processes beside the main one (`IngestProcesses` in ingest/service.py)."""

    def __init__(self, settings: Settings, *, count: int, forward: bool, shared: bool = True) -> None:
        self._settings = settings
        self._shared = shared  # False: one worker with the plain session (the default layout)
        self._forward = forward  # False: nobody in the main process needs the readings
        self._stream: ValidatedStream | None = None  # given by `open_stream`
        self._ctx = mp.get_context("spawn")
        self._stream_open = threading.Event()  # set once the alert engine has subscribed
        self.workers = [_Worker(i) for i in range(count)]
        self._stopping = False

    def _start(self, w: _Worker) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        w.process = self._ctx.Process(target=worker_main, name=f"cw-ingest-{w.index}", daemon=False,
                                      args=(w.index, child, self._forward, str(self._settings.data_dir),
                                            self._shared))
        w.process.start()
        child.close()
        w.conn = parent
        threading.Thread(target=self._read, args=(w, parent), name=f"cw-worker-{w.index}-reader",
                         daemon=True).start()

    def start(self) -> None:
        for w in self.workers:
            self._start(w)
        if self._shared:
            log.info("started %d MQTT ingest worker processes", len(self.workers))
        else:
            log.info("started the MQTT ingest process")

    def _read(self, w: _Worker, conn: Connection) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "batch" and self._forward:
                readings, events = decode_batch(message[1], message[2])
                self._stream_open.wait()  # the worker waits too (pipe backpressure): nothing is missed
                assert self._stream is not None
                self._stream.publish(readings, events)  # blocks while the alert engine is behind
            elif message[0] == "metrics":
                w.snapshot = message[1]

    def open_stream(self, stream: ValidatedStream) -> None:
        """Let forwarded readings through to `stream` (its subscribers exist now)."""
        self._stream = stream
        self._stream_open.set()

    async def supervise(self) -> None:
        """Start a worker again when it dies (its session and spool are still there)."""
        while True:
            await asyncio.sleep(1.0)
            for w in self.workers:
                if self._stopping or w.process is None or w.process.is_alive():
                    continue
                w.restarts += 1
                log.error("ingest worker %d exited with %s; starting it again", w.index, w.process.exitcode)
                w.snapshot = {}
                self._start(w)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM every worker (each commits, acks and flushes), then wait for them."""
        self._stopping = True
        for w in self.workers:
            if w.process is not None and w.process.pid is not None and w.process.is_alive():
                os.kill(w.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in self.workers:
            if w.process is None:
                continue
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():
                log.error("ingest worker %d did not stop in time; killing it", w.index)
                w.process.kill()
                w.process.join(5)
            if w.conn is not None:
                w.conn.close()

    # -- what the API and logs read ----------------------------------------------------
    @property
    def connected(self) -> bool:
        return all(w.snapshot.get("connected") for w in self.workers)

    @property
    def backlog_lines(self) -> int:
        return sum(int(w.snapshot.get("backlog", 0)) for w in self.workers)

    @property
    def writers_ok(self) -> bool:
        return all(w.snapshot.get("writer_ok", True) for w in self.workers)

    @property
    def intake_paused(self) -> bool:
        return any(w.snapshot.get("intake_paused") for w in self.workers)

    @property
    def storage(self) -> dict[str, str]:
        """The first failing state of each store among the workers ("ok" otherwise)."""
        out: dict[str, str] = {}
        for w in self.workers:
            for k, v in (w.snapshot.get("storage") or {}).items():
                if out.get(k, "ok") == "ok":
                    out[k] = v
        return out

    def collector(self) -> "PoolCollector":
        """The workers' counters for this process's /metrics."""
        return PoolCollector(self)

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in self.workers:
            for k, v in w.snapshot.items():
                if is_total(k):
                    out[k] = out.get(k, 0.0) + float(v)
        return out


class PoolCollector:
    """Prometheus view of the workers' counters (summed), from their last snapshots."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:  # prometheus_client's collector protocol
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        families: dict[str, CounterMetricFamily] = {}  # one per name, a sample per label set
        for key, value in sorted(self._pool.totals().items()):
            name, _, labels = key.partition("{")
            base = name.removeprefix("citywatch_").removesuffix("_total")
            pairs = [kv.split("=", 1) for kv in labels.rstrip("}").split(",") if kv]
            fam = families.get(base)
            if fam is None:
                fam = families[base] = CounterMetricFamily(f"citywatch_workers_{base}",
                                                           f"{base}, summed over MQTT ingest workers",
                                                           labels=[k for k, _ in pairs])
            fam.add_metric([v for _, v in pairs], value)
        yield from families.values()
        backlog = GaugeMetricFamily("citywatch_workers_spool_backlog", "Lines spooled by MQTT workers, not yet stored")
        backlog.add_metric([], self._pool.backlog_lines)
        yield backlog
        up = GaugeMetricFamily("citywatch_workers_mqtt_connected", "1 while every MQTT worker is connected")
        up.add_metric([], 1.0 if self._pool.connected else 0.0)
        yield up
        paused = GaugeMetricFamily("citywatch_workers_intake_paused",
                                   "1 while an MQTT worker's intake is paused (disk nearly full)")
        paused.add_metric([], 1.0 if self._pool.intake_paused else 0.0)
        yield paused
