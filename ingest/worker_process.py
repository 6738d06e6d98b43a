"""The MQTT ingest worker process: what `ingest.workers.WorkerPool` spawns.

Each worker runs the same pipeline as the single-process service (`ingest.service`),
MQTT only, and talks to the main process over a pipe: its validated readings (after they
are durable) when the main process runs the alert engine, and a counters snapshot every
second. See ingest/workers.py for why there are workers at all.
"""

from __future__ import annotations

import asyncio
import ctypes
import signal
import threading
from collections.abc import Iterable
from multiprocessing.connection import Connection

from citywatch.logs import setup_logging
from citywatch.model import Event, Reading
from citywatch.settings import Settings
from ingest.service import build_ingest, run_service

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe's EOF still stops the worker
        pass


# A reading / an event as plain tuples: what crosses the pipe (pickled, smaller than the dataclass).
ReadingRow = tuple[str, str, str, int, dict[str, float | bool], int | None, dict[str, str]]
EventRow = tuple[str, str, str, int, str, dict[str, float | bool | str]]


def encode_batch(readings: Iterable[Reading], events: Iterable[Event]) -> tuple[list[ReadingRow], list[EventRow]]:
    return ([(r.kind, r.site, r.device, r.ts_ms, r.values, r.seq, r.quality) for r in readings],
            [(e.kind, e.site, e.device, e.ts_ms, e.type, e.attributes) for e in events])


def decode_batch(readings: list[ReadingRow], events: list[EventRow]) -> tuple[list[Reading], list[Event]]:
    return [Reading(*r) for r in readings], [Event(*e) for e in events]


def worker_main(index: int, conn: Connection, forward: bool, data_dir: str, shared: bool = True) -> None:
    """Entry point of worker `index` (a spawned process; settings come from the environment)."""
    _die_with_parent()
    # MQTT only: the HJ 212 gateway and the API belong to the main process (the same
    # environment names their port; binding it twice would kill this worker at start).
    settings = Settings.load(worker_index=index, worker_shared=shared, data_dir=data_dir, hj212_listen=None)
    setup_logging(settings.log_level, settings.log_format)
    ingest = build_ingest(settings)
    send_lock = threading.Lock()

    def send(message: tuple[object, ...]) -> None:
        with send_lock:
            conn.send(message)

    async def forward_stream() -> None:
        sub = ingest.stream.subscribe(max_batches=64)
        async for batch in sub:
            await asyncio.to_thread(send, ("batch", *encode_batch(batch.readings, batch.events)))

    async def report() -> None:
        while True:
            consumer = ingest.consumer
            snap = {"connected": bool(consumer and consumer.connected.is_set()),
                    "backlog": ingest.spool.backlog_lines, "writer_ok": bool(ingest.writer.healthy),
                    "intake_paused": ingest.committer.paused_reason is not None, "storage": ingest.storage,
                    **{k: v for k, v in ingest.metrics.snapshot().items() if is_total(k)}}
            await asyncio.to_thread(send, ("metrics", snap))
            await asyncio.sleep(1.0)

    async def watch_parent(stop: asyncio.Event) -> None:
        # EOF on the pipe: the main process is gone (or closed it to stop us). A daemon
        # thread, not the executor: a blocked executor thread would keep the worker from
        # exiting after a normal stop.
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def wait() -> None:
            _wait_eof(conn)
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=wait, name="cw-parent-watch", daemon=True).start()
        await done.wait()
        stop.set()

    if forward:
        ingest.extra_tasks.append(forward_stream)
    ingest.extra_tasks.append(report)
    asyncio.run(run_service(settings, ingest=ingest, watch=watch_parent))


def is_total(key: str) -> bool:
    """A counter's sample key, labels or not: `name_total` or `name_total{label=value}`."""
    return key.partition("{")[0].endswith("_total")


def _wait_eof(conn: Connection) -> None:
    try:
        while True:
            conn.recv()
    except (EOFError, OSError):
        return
