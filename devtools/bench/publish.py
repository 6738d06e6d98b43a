"""The readings the benchmark publishes: the simulated normal-day fleet or many synthetic
devices, sent QoS 1 by worker processes that wait for every PUBACK."""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass

from devtools.bench.common import ROOT, SCENARIO


@dataclass(frozen=True, slots=True)
class Msg:
    topic: str
    payload: bytes


def sim_source(*, sites: int, seed: int, start_iso: str, part: tuple[int, int]):
    """Telemetry (not events) of the normal-day scenario, one part of the fleet."""
    from simulators import generate

    for m in generate(SCENARIO, sites=sites, seed=seed, start=start_iso, part=part):
        if m.topic.startswith("telemetry/"):
            yield m


def _payload_pool(seed: int) -> dict[str, list[dict]]:
    pool: dict[str, list[dict]] = {"dust": [], "heating": [], "water": []}
    for m in itertools.islice(sim_source(sites=40, seed=seed, start_iso="2026-01-05T00:00:00", part=(0, 1)), 4000):
        pool[m.topic.split("/")[1]].append(json.loads(m.payload)["values"])
    return pool


def synthetic_source(*, devices: int, seed: int, start_ms: int, part: tuple[int, int]):
    """Many distinct devices fast: values sampled from simulator payloads of the same kind,
    the mix of normal-day (70 % dust, 20 % heating, 10 % water), one reading per device per
    round, 10 s apart. Building 100k simulator device models takes over a minute."""
    pool = _payload_pool(seed)
    kinds = ["dust"] * 7 + ["heating"] * 2 + ["water"]
    k, p = part
    mine = [d for d in range(devices) if d % p == k]
    for r in itertools.count():
        ts = start_ms + r * 10_000
        for d in mine:
            kind = kinds[d % 10]
            values = pool[kind][(d * 7 + r) % len(pool[kind])]
            yield Msg(f"telemetry/{kind}/S{d:06d}/D{d:06d}",
                      json.dumps({"ts": ts + d % 10_000, "seq": r, "values": values}).encode())


def _publish_worker(url: str, client_id: str, source: dict, part: tuple[int, int], count: int,
                    rate: float | None, result, ca_file: str | None = None) -> None:
    """Publish `count` messages of one part (QoS 1) and wait for every PUBACK."""
    try:
        if str(ROOT) not in sys.path:  # a stale editable install can leave `simulators` a namespace package
            sys.path.insert(0, str(ROOT))
        from simulators.publisher import Publisher

        src = dict(source)
        kind = src.pop("type")
        gen = sim_source(part=part, **src) if kind == "sim" else synthetic_source(part=part, **src)
        pub = Publisher(url=url, client_id=client_id, max_inflight=20_000, stall_timeout_s=120, ca_file=ca_file)
        pub.connect()
        t0 = time.monotonic()
        sent = 0
        for m in itertools.islice(gen, count):
            if rate:
                while sent >= (time.monotonic() - t0) * rate:
                    pub.idle(0.002)
            pub.publish(m)
            sent += 1
        pub.flush()
        pub.close()
        result.put((part[0], pub.acked, time.monotonic() - t0, None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        result.put((part[0], 0, 0.0, f"{type(exc).__name__}: {exc}"))


class PublishJob:
    """`processes` worker processes publishing `total` messages between them."""

    def __init__(self, url: str, prefix: str, source: dict, total: int, *, processes: int = 2,
                 rate: float | None = None, ca_file: str | None = None) -> None:
        ctx = mp.get_context("spawn")
        self.result = ctx.Queue()
        self.total = total
        shares = [total // processes + (1 if k < total % processes else 0) for k in range(processes)]
        self.workers = [ctx.Process(target=_publish_worker, daemon=True, name=f"bench-pub-{k}",
                                    args=(url, f"{prefix}-{k}", source, (k, processes), shares[k],
                                          rate / processes if rate else None, self.result, ca_file))
                        for k in range(processes)]

    def start(self) -> "PublishJob":
        for w in self.workers:
            w.start()
        return self

    def wait(self, timeout: float = 600.0) -> tuple[int, float]:
        acked, seconds, errors = 0, 0.0, []
        deadline = time.monotonic() + timeout
        for _ in self.workers:
            _, n, s, err = self.result.get(timeout=max(1.0, deadline - time.monotonic()))
            acked += n
            seconds = max(seconds, s)
            if err:
                errors.append(err)
        self.stop()
        if errors:
            raise RuntimeError("publisher failed: " + "; ".join(errors))
        return acked, seconds

    def stop(self) -> None:
        for w in self.workers:
            w.join(timeout=2)
            if w.is_alive():
                w.terminate()
                w.join(timeout=5)
