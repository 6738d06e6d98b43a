"""Dead-letter replay inside the running service.

The spool has one writer (the committer), so a replay re-decodes each pending letter and
submits every now-valid outcome through `ingest.committer.submit`, exactly like a live
input: the lines are spooled with one fsync, the readings reach the alert engine, and
only after the committer reports them durable are the letters marked replayed (a crash in
between replays them twice, harmlessly: InfluxDB points are idempotent). HJ 212 frames are
re-decoded by the HJ 212 decoder, everything else by the MQTT decoder (`ingest.replay.redecoder`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any
from ingest.replay import redecode_pending, redecoder

_lock = threading.Lock()  # one replay at a time per process


class ReplayBusy(Exception):
    pass


class ReplayNotDurable(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Result:
    accepted: int
    still_rejected: int


def replay(ingest: Any, *, tz: str, dry_run: bool = False, timeout_s: float = 60.0) -> Result:
    """Blocking (run it in a worker thread)."""
    if not _lock.acquire(blocking=False):
        raise ReplayBusy("a replay is already running")
    try:
        return _replay(ingest, tz=tz, dry_run=dry_run, timeout_s=timeout_s)
    finally:
        _lock.release()


def _replay(ingest: Any, *, tz: str, dry_run: bool, timeout_s: float) -> Result:
    store = ingest.deadletters
    decode = redecoder(ingest.settings, ingest.registry)  # HJ 212 letters to their decoder, others to MQTT's
    ok_ids, accepted, still = redecode_pending(store, decode, dry_run=dry_run)
    outcomes = [replace(o, raw=replace(o.raw, source="replay")) for o in accepted]
    if dry_run or not outcomes:
        return Result(len(ok_ids), still)
    done = threading.Semaphore(0)
    failed: list[bool] = []

    def on_durable(ok: bool) -> None:
        if not ok:
            failed.append(True)
        done.release()

    for o in outcomes:
        ingest.committer.submit(o, on_durable)
    deadline = time.monotonic() + timeout_s
    for _ in outcomes:
        if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ReplayNotDurable("the spool did not confirm the replayed messages in time; nothing marked")
    if failed:
        raise ReplayNotDurable("the spool could not store the replayed messages; nothing marked")
    store.mark_replayed(ok_ids, time.time_ns() // 1_000_000)
    return Result(len(ok_ids), still)
