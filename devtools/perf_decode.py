"""Micro benchmark of the ingest hot path: CPU time per message of decoding (validation +
readings + line protocol) and of the group commit, on realistic simulator traffic.

    python -m devtools.perf_decode                    # normal-day, 200 sites, 2 h ≈ 110k messages
    python -m devtools.perf_decode --runs 7 --json var/perf_decode.json
    python -m devtools.perf_decode --scenario faults  # rejections too (reason strings are built)

No broker, no InfluxDB: messages come from `simulators.generate` (the same payloads the
simulators publish), the spool and dead-letter store live in a temporary directory. Each
measurement is repeated `--runs` times back to back; the median is what to compare.

`commit` is `Committer.commit` on groups of `--group` outcomes, as the committer thread
runs it: µs of that thread's CPU per message (including the kernel's part of write and
fsync) and µs of wall time (including waiting for the disk, which does not hold the GIL).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from citywatch.model import RawMessage
from ingest.committer import Committer
from ingest.deadletters import DeadLetterStore
from ingest.decode import Decoder
from ingest.spool import Spool
from ingest.types import Accepted, Outcome


def simulated_messages(scenario: str, sites: int, duration_s: float, seed: int) -> list[RawMessage]:
    from simulators import generate

    return [RawMessage(m.topic, m.payload, m.sim_ts_ms)
            for m in generate(scenario, sites=sites, seed=seed, duration_s=duration_s)]


def decoder_for(raws: list[RawMessage]) -> Decoder:
    # The server clock is pinned to the end of the simulated run, so no reading is "future".
    now_ms = max(r.received_ms for r in raws) + 1000
    return Decoder(clock=lambda: now_ms)


def time_decode(decoder: Decoder, raws: list[RawMessage]) -> float:
    """µs of CPU per message for decoding all of `raws` once. The outcomes are dropped as
    they come, as the service hands them on: keeping 100k of them alive would add the
    garbage collector's passes over them (about 4 µs a message) to what is measured."""
    decode = decoder.decode
    gc.collect()
    started = time.thread_time_ns()
    for raw in raws:
        decode(raw)
    return (time.thread_time_ns() - started) / 1000 / len(raws)


class _AckGroup:
    """Stands in for an MQTT connection: the committer hands it each group's tokens at once."""

    def ack_many(self, tokens: list, ok: bool = True) -> None:
        pass


class _AckToken:
    __slots__ = ("ack_group",)

    def __init__(self, group: _AckGroup) -> None:
        self.ack_group = group

    def __call__(self, ok: bool) -> None:
        self.ack_group.ack_many([self], ok)


def time_commit(outcomes: list[Outcome], group_size: int) -> tuple[float, float]:
    """(µs of CPU, µs of wall time) per message for committing `outcomes` in groups."""
    connection = _AckGroup()
    items = [(o, _AckToken(connection)) for o in outcomes]
    groups = [items[i:i + group_size] for i in range(0, len(items), group_size)]
    with tempfile.TemporaryDirectory(prefix="cw-perf-") as tmp:
        spool = Spool(Path(tmp) / "spool")
        deadletters = DeadLetterStore(Path(tmp) / "deadletters.sqlite")
        committer = Committer(spool=spool, deadletters=deadletters)
        gc.collect()
        wall = time.perf_counter_ns()
        cpu = time.thread_time_ns()
        for group in groups:
            committer.commit(group)
        cpu = time.thread_time_ns() - cpu
        wall = time.perf_counter_ns() - wall
        spool.close()
        deadletters.close()
    return cpu / 1000 / len(items), wall / 1000 / len(items)


def _summary(samples: list[float]) -> dict:
    return {"median": round(statistics.median(samples), 3), "min": round(min(samples), 3),
            "runs": [round(s, 3) for s in samples]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.perf_decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="normal-day")
    p.add_argument("--sites", type=int, default=200)
    p.add_argument("--duration", type=float, default=7200.0, help="simulated seconds (default 2 h)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--group", type=int, default=500, help="outcomes per group commit")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    raws = simulated_messages(args.scenario, args.sites, args.duration, args.seed)
    decoder = decoder_for(raws)
    decode_us, commit_cpu_us, commit_wall_us = [], [], []
    time_decode(decoder, raws[:5000])  # warm-up: topic cache, adapters, line formatter
    for _ in range(args.runs):
        decode_us.append(time_decode(decoder, raws))
    outcomes = [decoder.decode(raw) for raw in raws]
    # The committer logs the first rejections of each group; that is not what is measured.
    logging.getLogger("citywatch.ingest.committer").setLevel(logging.ERROR)
    for _ in range(args.runs):
        cpu, wall = time_commit(outcomes, args.group)
        commit_cpu_us.append(cpu)
        commit_wall_us.append(wall)

    accepted = sum(isinstance(o, Accepted) for o in outcomes)
    by_channel = Counter(r.topic.split("/", 2)[0] + "/" + r.topic.split("/", 2)[1] for r in raws)
    result = {
        "python": sys.version.split()[0],
        "scenario": args.scenario, "sites": args.sites, "duration_s": args.duration,
        "messages": len(raws), "accepted": accepted, "rejected": len(raws) - accepted,
        "by_topic": dict(by_channel.most_common()),
        "group": args.group,
        "decode_cpu_us": _summary(decode_us),
        "commit_cpu_us": _summary(commit_cpu_us),
        "commit_wall_us": _summary(commit_wall_us),
    }
    print(f"{len(raws)} messages ({args.scenario}, {args.sites} sites, {args.duration:.0f} s; "
          f"{accepted} accepted, {len(raws) - accepted} rejected), {args.runs} runs")
    for name in ("decode_cpu_us", "commit_cpu_us", "commit_wall_us"):
        s = result[name]
        print(f"  {name:15s} median {s['median']:7.3f} µs/msg   runs {s['runs']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
