"""Load generator: one scenario run spread over several processes.

Process k of p generates and publishes the devices whose fleet index is k modulo p
(`generate(part=(k, p))`), with its own client id and persistent session and a p-th of
the target rate, so neither generation nor one client's socket is the bottleneck. The
parts are disjoint and together exactly the single-process stream.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Callable
from dataclasses import dataclass

from simulators.errors import PublishError, SimulatorError
from simulators.pacing import Pacer
from simulators.publisher import PublishSummary, publish_all
from simulators.stream import expected_count, generate_run, plan_run


@dataclass(frozen=True, slots=True)
class LoadSpec:
    scenario: str
    sites: int
    seed: int
    url: str
    duration_s: float | None = None
    start: str | None = None
    speed: float = 0.0            # 0 = as fast as possible
    rate: float | None = None     # msg/s over all processes
    processes: int = 1
    client_id_prefix: str = ""    # "" = citywatch-sim-<pid>
    max_inflight: int = 10_000
    stall_timeout_s: float = 300.0
    connect_timeout_s: float = 30.0
    ca_file: str | None = None    # mqtts://: the CA that signed the broker's certificate

    def client_id(self, part: int) -> str:
        return f"{self.client_id_prefix or f'citywatch-sim-{os.getpid()}'}-{part}"


Progress = Callable[[int, int], None]  # (sent, acked) totals


def expected_messages(spec: LoadSpec) -> int:
    run = plan_run(spec.scenario, sites=spec.sites, seed=spec.seed, duration_s=spec.duration_s, start=spec.start)
    return expected_count(run)


def run_part(spec: LoadSpec, *, part: int, client_id: str, on_progress: Progress | None = None) -> PublishSummary:
    """Generate and publish one part; returns when all of its messages are acknowledged."""
    run = plan_run(spec.scenario, sites=spec.sites, seed=spec.seed, duration_s=spec.duration_s, start=spec.start)
    rate = spec.rate / spec.processes if spec.rate else None
    return publish_all(
        generate_run(run, part=(part, spec.processes)), url=spec.url, client_id=client_id,
        pacer=Pacer(speed=spec.speed, rate=rate), max_inflight=spec.max_inflight,
        stall_timeout_s=spec.stall_timeout_s, connect_timeout_s=spec.connect_timeout_s, on_progress=on_progress,
        ca_file=spec.ca_file,
    )


def _worker(spec: LoadSpec, part: int, client_id: str, counters, results) -> None:
    def report(sent: int, acked: int) -> None:
        counters[2 * part], counters[2 * part + 1] = sent, acked

    try:
        results.put((part, run_part(spec, part=part, client_id=client_id, on_progress=report), None))
    except SimulatorError as exc:
        results.put((part, None, f"{type(exc).__name__}: {exc}"))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
        results.put((part, None, f"{type(exc).__name__}: {exc}"))


def run_load(spec: LoadSpec, *, on_progress: Progress | None = None, poll_s: float = 0.25) -> PublishSummary:
    """Publish the whole run; with `processes` > 1 in that many worker processes."""
    if spec.processes <= 1:
        return run_part(spec, part=0, client_id=spec.client_id(0), on_progress=on_progress)
    ctx = mp.get_context("spawn")  # no paho threads or sockets inherited across fork
    counters = ctx.Array("q", 2 * spec.processes, lock=False)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(spec, k, spec.client_id(k), counters, results), daemon=True,
                    name=f"citywatch-sim-{k}")
        for k in range(spec.processes)
    ]
    for w in workers:
        w.start()
    summaries: dict[int, PublishSummary] = {}
    errors: list[str] = []
    try:
        while len(summaries) + len(errors) < len(workers):
            try:
                part, summary, error = results.get(timeout=poll_s)
                if error:
                    errors.append(f"part {part}: {error}")
                else:
                    summaries[part] = summary
            except queue.Empty:
                dead = [w for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    errors.extend(f"{w.name} exited with {w.exitcode}" for w in dead)
                    break
            if on_progress is not None:
                totals = list(counters)
                on_progress(sum(totals[0::2]), sum(totals[1::2]))
    finally:
        for w in workers:
            w.join(timeout=5 if not errors else 0.5)
            if w.is_alive():
                w.terminate()
                w.join(timeout=5)
    if errors:
        raise PublishError("; ".join(errors))
    return PublishSummary.merge(summaries[k] for k in sorted(summaries))
