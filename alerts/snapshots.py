"""Window snapshots: device watermarks and window contents written to the alert state
(every `snapshot_interval_s` on a worker thread, and on close), and their deferral while
the data disk is nearly full.

Priority on the data disk: the spool holds acknowledged readings, the window snapshots are
only a cache that makes a restart faster (without them, windowed rules wait until their
`min_coverage` is met again; they never make a false transition). With the 24-h rules on,
each snapshot rewrites every monitor's raw tail and current hour row, and on a nearly full
disk those WAL pages eat the space the drained spool gives back, so intake could not
resume. So while `defer` names a reason (the disk watch is below its warning threshold, or
the snapshot, sized as the last one written, would take it there: `DiskWatch.defer_write`,
wired in app/service.py), the window series are not written: they stay marked dirty in
memory, and the first snapshot once space is back writes their newest contents (one
snapshot, not the missed ones: each row is the whole current state). When a deferral
begins and after that catch-up snapshot the WAL is cut to nothing (`give_back_wal`), as
SQLite otherwise keeps up to 1 MiB of it (`journal_size_limit`). Device rows (the
watermark and last-seen time, one small row per device) are still written: the deadman
rules judge silence from last-seen, and a stale one after a crash could fire them falsely.
Alert lifecycle transitions never come here (alerts/lifecycle.py `flush`); they are
written, or held in memory on a full disk (alerts/held.py), as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from alerts.buckets import BucketedSeries
from alerts.plan import Device
from alerts.store import AlertStore

log = logging.getLogger("citywatch.alerts")


class Snapshots:
    """`write()` is the engine's `snapshot`; `defer` is set by whoever knows the disk."""

    def __init__(self, store: AlertStore, mu: threading.RLock, devices: Callable[[], dict[str, Device]],
                 stats: dict[str, int]):
        self._store = store
        self._mu = mu
        self._devices = devices  # the engine's current map (rebuilt when the state is loaded)
        self._stats = stats
        # Keeps snapshots in order, so an older one can never overwrite a newer one (the
        # last, on close, included).
        self._lock = threading.Lock()
        self.defer: Callable[[int], str | None] | None = None  # given the bytes of the last snapshot
        self._last_bytes = 0
        self.deferred_since: float | None = None  # monotonic; None while snapshots are written
        stats.setdefault("snapshots_deferred", 0)

    def write(self, *, force: bool = False) -> None:
        """Persist device watermarks and (unless deferred) window contents.

        The rows are taken under the engine lock, but written without it: the periodic
        snapshot runs on a worker thread (alerts/timer.py) and its SQLite transaction
        (hundreds of rows and an fsync, 20-50 ms with a few hundred devices) does not hold
        up the evaluation of new readings. `force` (on close) writes the windows even on a
        low disk: intake has stopped by then, and without them the next start waits up to
        20 h before the 24-h rules may judge again."""
        with self._lock:
            reason = None if force or self.defer is None else self.defer(self._last_bytes)
            was_deferred = self.deferred_since is not None
            self._note(reason)
            devices: list[tuple[str, str, str, int, int]] = []
            series: list[tuple[str, str, bytes, bytes, Any]] = []  # + a long window's changed hours
            with self._mu:
                for d in self._devices().values():
                    if d.meta_dirty:
                        devices.append((d.device, d.kind, d.site, d.watermark, d.last_seen))
                        d.meta_dirty = False
                    if reason is not None or not d.dirty:
                        continue  # deferred: the series stay dirty, and the next snapshot writes them
                    for f in d.dirty:
                        s = d.series[f]
                        series.append((d.device, f, *s.dump(), type(s) is BucketedSeries and s.dump_buckets()))
                    d.dirty = ()
            if series:
                self._last_bytes = sum(len(ts) + len(v) + (sum(len(b) for _, b in hours[0]) if hours else 0)
                                       for _, _, ts, v, hours in series)
            if devices or series:
                with self._store.transaction() as tx:
                    for dev_row in devices:
                        tx.put_device(*dev_row)
                    for device, f, ts, v, hours in series:
                        tx.put_series(device, f, ts, v)
                        if hours:
                            tx.put_series_buckets(device, f, *hours)
            if (reason is None) == was_deferred:
                # A deferral begins (the WAL holds up to 1 MiB of past snapshots' pages) or
                # ends (the catch-up snapshot just grew it by one whole snapshot, on a disk
                # that was nearly full a moment ago): give that space back to the spool.
                self._store.give_back_wal()

    def _note(self, reason: str | None) -> None:
        """Count a deferred snapshot; log the start and the end of a deferral once each."""
        if reason is not None:
            self._stats["snapshots_deferred"] += 1
            if self.deferred_since is None:
                self.deferred_since = time.monotonic()
                log.warning("alert window snapshots deferred (%s): the spool has the disk first; windows stay "
                            "in memory and the newest are written once space is back", reason)
        elif self.deferred_since is not None:
            log.info("alert window snapshots written again after %.0f s deferred",
                     time.monotonic() - self.deferred_since)
            self.deferred_since = None
