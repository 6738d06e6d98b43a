"""The disk under CW_DATA_DIR: thresholds, the start-up check, and the watch that pauses
intake before the disk is full and resumes it by itself when space is back.

Thresholds are the smaller of an absolute value and a share of the filesystem, so they
make sense on a 2 GB volume as on a 2 TB one (defaults: pause below min(256 MiB, 5 %),
warn below min(2 GiB, 15 %)). Free space counts the spool's consumed data that is not
given back yet (`Spool.reclaimable_bytes`, at most a reclaim step once `reclaim` ran):
that is what the writer's checkpoint has already released.

Pausing means backpressure, never loss: the committer stops taking submissions from the
inputs, so MQTT messages stay unacknowledged in the broker and HJ 212 monitors get no
answer yet. Alert history (a few lines per alert change) still goes through.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from citywatch.errors import ConfigError
from ingest.deadletters import DeadLetterError

if TYPE_CHECKING:  # annotations only: the watch is handed these, it does not build them
    from citywatch.settings import Settings
    from ingest.committer import Committer
    from ingest.deadletters import DeadLetterStore
    from ingest.metrics import IngestMetrics
    from ingest.spool import Spool

log = logging.getLogger("citywatch.ingest.disk")


@dataclass(frozen=True, slots=True)
class Usage:
    total: int
    free: int  # available to this (non-root) user, as df shows it


def usage(path: Path) -> Usage:
    st = os.statvfs(path)
    return Usage(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


def pause_threshold(settings: Settings, total: int) -> int:
    """Intake pauses below this much free space: min(CW_SPOOL_MIN_FREE_BYTES, CW_SPOOL_MIN_FREE_PERCENT)."""
    return int(min(settings.spool_min_free_bytes, total * settings.spool_min_free_percent / 100))


def warn_threshold(settings: Settings, total: int) -> int:
    """A warning below this much free space: min(CW_SPOOL_WARN_FREE_BYTES, CW_SPOOL_WARN_FREE_PERCENT)."""
    return max(pause_threshold(settings, total),
               int(min(settings.spool_warn_free_bytes, total * settings.spool_warn_free_percent / 100)))


def resume_threshold(settings: Settings, total: int) -> int:
    """Intake resumes at or above this: the pause threshold plus a margin (a tenth of it,
    at least 1 MiB, never more than a segment), so that it does not flap on every commit.
    The start-up check guarantees a segment above the pause threshold, so the margin is
    always reachable once the backlog has drained."""
    pause = pause_threshold(settings, total)
    return pause + min(settings.spool_segment_bytes, max(1024 * 1024, pause // 10))


def deadletter_quota(settings: Settings, total: int) -> int:
    """The dead-letter store's size quota: min(CW_DEADLETTER_MAX_BYTES, CW_DEADLETTER_MAX_PERCENT)."""
    return max(64 * 1024, int(min(settings.deadletter_max_bytes, total * settings.deadletter_max_percent / 100)))


def _allocated(directory: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for e in entries:
        try:
            if e.is_file(follow_symlinks=False):
                total += e.stat(follow_symlinks=False).st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def spool_bytes(data_dir: Path) -> int:
    """Disk space the spools under `data_dir` take (the main one and each worker's)."""
    return sum(_allocated(p) for p in data_dir.glob("spool*") if p.is_dir())


def check_data_dir(settings: Settings) -> None:
    """`citywatch run` refuses to start (ConfigError: exit 2, one line) on a data directory
    that cannot hold one spool segment above the pause threshold, even with every spool
    drained: intake would pause at once and could never resume."""
    data_dir = Path(settings.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"CW_DATA_DIR={data_dir} cannot be created: {exc.strerror}") from exc
    u = usage(data_dir)
    pause = pause_threshold(settings, u.total)
    usable = u.free + spool_bytes(data_dir)
    needed = pause + settings.spool_segment_bytes
    if usable < needed:
        raise ConfigError(
            f"CW_DATA_DIR={data_dir} has {_mb(usable)} usable ({_mb(u.free)} free of {_mb(u.total)}), less than "
            f"one spool segment (CW_SPOOL_SEGMENT_BYTES={settings.spool_segment_bytes}) above the pause threshold "
            f"of {_mb(pause)} (CW_SPOOL_MIN_FREE_BYTES / CW_SPOOL_MIN_FREE_PERCENT): give it more space or lower "
            f"CW_SPOOL_SEGMENT_BYTES")


_WAITING = {"MQTT": "messages wait in the broker", "HJ 212": "HJ 212 monitors wait for their answer",
            "MQTT and HJ 212": "messages wait in the broker and HJ 212 monitors for their answer"}


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


class DiskWatch:
    """Checks the spool's filesystem every `every_s` (1 s; ten times as often below the warning
    threshold): gives consumed spool space back,
    pauses intake below the pause threshold and resumes it above the resume threshold.
    Each transition is logged once, counted (`citywatch_intake_pauses_total`,
    `citywatch_intake_resumes_total`, gauge `citywatch_intake_paused`) and shown in /health."""

    def __init__(self, *, settings: Settings, spool: Spool, committer: Committer, metrics: IngestMetrics,
                 deadletters: DeadLetterStore | None = None, maintenance_every_s: float = 60.0) -> None:
        self._s = settings
        self._spool = spool
        self._committer = committer
        self._metrics = metrics
        self._deadletters = deadletters
        self._maintenance_every = maintenance_every_s
        self._last_maintenance = time.monotonic()
        self._warned = False
        self.paused_since: float | None = None
        # Below the warning threshold, until back above it by the resume margin: what
        # should wait for the spool (the alert engine's window snapshots, a cache).
        self.low_space = False
        self.free_bytes: int | None = None
        self.pause_bytes: int | None = None
        # What this process takes in ("MQTT", "HJ 212"): named in the log lines. Empty (the
        # main process when MQTT runs in an ingest process and no gateway listens): the
        # committer is still held, but the transitions are the ingest process's to report.
        self.inputs = "MQTT"

    @property
    def paused(self) -> bool:
        return self.paused_since is not None

    def check(self) -> None:
        """One look at the disk (blocking: statvfs, unlink, fallocate)."""
        s, m = self._s, self._metrics
        before = self._spool.reclaimed_bytes
        self._spool.reclaim()
        m.reclaimed.inc(self._spool.reclaimed_bytes - before)
        u = usage(self._spool.dir)
        free = u.free + self._spool.reclaimable_bytes
        pause, resume = pause_threshold(s, u.total), resume_threshold(s, u.total)
        self.free_bytes, self.pause_bytes = free, pause
        m.disk_free.set(u.free)
        m.disk_pause_threshold.set(pause)
        if not self.paused and free < pause:
            self.paused_since = time.monotonic()
            self._committer.pause("disk nearly full")
            if self.inputs:
                m.intake_paused.set(1)
                m.intake_pauses.inc()
                log.error("%s intake paused: %s free under %s, below the pause threshold of %s "
                          "(CW_SPOOL_MIN_FREE_BYTES / CW_SPOOL_MIN_FREE_PERCENT); %s until InfluxDB drains the "
                          "backlog (%d lines, %s) or space is freed", self.inputs, _mb(free), self._spool.dir,
                          _mb(pause), _WAITING.get(self.inputs, "inputs wait"), self._spool.backlog_lines,
                          _mb(self._spool.backlog_bytes))
        elif self.paused and free >= resume:
            assert self.paused_since is not None
            took = time.monotonic() - self.paused_since
            self.paused_since = None
            self._committer.pause(None)
            if self.inputs:
                m.intake_paused.set(0)
                m.intake_resumes.inc()
                log.warning("%s intake resumed: %s free under %s after %.0f s paused; backlog %d lines",
                            self.inputs, _mb(free), self._spool.dir, took, self._spool.backlog_lines)
        warn = warn_threshold(s, u.total)
        if free < warn and not self._warned and self.inputs:
            log.warning("spool disk is filling: %s free (warning below %s, CW_SPOOL_WARN_FREE_BYTES / "
                        "CW_SPOOL_WARN_FREE_PERCENT), backlog %d lines (%s)", _mb(free), _mb(warn),
                        self._spool.backlog_lines, _mb(self._spool.backlog_bytes))
        self._warned = free < warn
        # The same hysteresis as intake (resume - pause), so that writers deferred to the
        # spool do not flap on every commit near the threshold.
        self.low_space = free < (warn + resume - pause if self.low_space else warn)
        if self._deadletters is not None and time.monotonic() - self._last_maintenance >= self._maintenance_every:
            self._last_maintenance = time.monotonic()
            try:
                self._deadletters.maintain()
            except DeadLetterError:
                pass  # a full disk: the store has said so once (and /health shows it)

    def defer_write(self, nbytes: int) -> str | None:
        """Why a cache write of about `nbytes` (the alert engine's window snapshot) should
        wait for the spool, or None: the disk is below the warning threshold (`low_space`),
        or the write would take it there. Counted twice (SQLite writes it to the WAL, then
        checkpoints it into the file) and against the free space now, not the last check:
        at full intake the disk can pass the threshold between two checks, and a snapshot
        committed into the last space cannot be checkpointed, so its WAL stays."""
        if self.low_space:
            return "data disk below its warning threshold"
        u = usage(self._spool.dir)
        if u.free - 2 * nbytes < warn_threshold(self._s, u.total):
            return f"a snapshot of {_mb(nbytes)} would take the data disk below its warning threshold"
        return None

    async def run(self, every_s: float = 1.0) -> None:
        # A thread of its own: the watch is what resumes intake, so it must never queue
        # behind other work in the default executor.
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cw-disk") as pool:
            while True:
                try:
                    await loop.run_in_executor(pool, self.check)
                except Exception:  # the watch must outlive any one failure
                    log.exception("disk check failed")
                # Under the warning threshold, look ten times as often: at full speed intake
                # writes megabytes a second, which a small disk's margin may not have.
                await asyncio.sleep(every_s / 10 if self._warned or self.paused else every_s)
