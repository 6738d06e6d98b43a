"""Dead-letter replay: run stored messages through the current decoder again.

Use it after fixing the registry (`CW_DEVICES_FILE`) or a kind's ranges. Messages that
now pass are appended to the spool (durably) and marked replayed; the others keep their
new reasons. Only one process may append to the spool, so while `citywatch run` holds it
the replay is refused with a clear message (the running service replays through its API).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from citywatch.errors import CitywatchError
from citywatch.registry import Registry
from citywatch.settings import Settings
from ingest.deadletters import DeadLetterStore
from ingest.decode import Decoder
from ingest.spool import Spool, SpoolLocked
from citywatch.model import RawMessage
from ingest.types import Accepted, Outcome, internal_error

log = logging.getLogger("citywatch.ingest.replay")

Redecode = Callable[[RawMessage], Outcome]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    accepted: int
    still_rejected: int


def redecoder(settings: Settings, registry: Registry) -> Redecode:
    """A `decode(raw) -> Outcome` that sends each dead letter back through the stage that
    first judged it: HJ 212 frames to the HJ 212 decoder, everything else to MQTT's."""
    from zoneinfo import ZoneInfo

    from ingest.hj212 import DecodeContext, decode_raw

    mqtt_decoder = Decoder(registry=registry, max_payload_bytes=settings.max_payload_bytes,
                           max_future_s=settings.max_future_s)
    hj212_ctx = DecodeContext(registry=registry, tz=ZoneInfo(settings.tz), max_future_s=settings.max_future_s)

    def decode(raw: RawMessage) -> Outcome:
        return decode_raw(raw, hj212_ctx) if raw.source == "hj212" else mqtt_decoder.decode(raw)

    return decode


def redecode_pending(store: DeadLetterStore, decode: Redecode, *, dry_run: bool = False
                     ) -> tuple[list[int], list[Accepted], int]:
    """Run every pending dead letter through `decode` again. Returns the ids that now
    pass, their outcomes, and how many still fail (whose reasons are updated unless
    `dry_run`). Marking the passing ones replayed is the caller's job, after they are
    durable: a crash in between replays them twice, harmlessly."""
    ok_ids: list[int] = []
    outcomes: list[Accepted] = []
    still = 0
    for letter in list(store.iter_pending()):
        if letter.source == "influx":
            still += 1  # refused by InfluxDB itself: nothing in our validation to re-run
            continue
        try:
            outcome = decode(letter.raw)
        except Exception as exc:  # a decoder bug: keep the letter, say why, replay the rest
            log.exception("decoder failed on dead letter %d", letter.id)
            outcome = internal_error(letter.raw, exc)
        if isinstance(outcome, Accepted) and not outcome.partial:
            ok_ids.append(letter.id)
            outcomes.append(outcome)
        else:
            still += 1
            if not dry_run:  # stored in part (its valid items were stored the first time): the rest's reasons
                store.update_reasons(letter.id, outcome.partial if isinstance(outcome, Accepted) else outcome.reasons)
    return ok_ids, outcomes, still


def replay_into(store: DeadLetterStore, decode: Redecode, append_lines: Callable[[list[str]], object], *,
                dry_run: bool = False) -> ReplayResult:
    ok_ids, outcomes, still = redecode_pending(store, decode, dry_run=dry_run)
    if not dry_run and ok_ids:
        append_lines([line for o in outcomes for line in o.lines])  # durable first, then mark
        store.mark_replayed(ok_ids, time.time_ns() // 1_000_000)
    return ReplayResult(len(ok_ids), still)


def replay_deadletters(settings: Settings, *, dry_run: bool = False) -> ReplayResult:
    try:
        spool = Spool(settings.spool_dir, segment_bytes=settings.spool_segment_bytes)
    except SpoolLocked as exc:
        raise CitywatchError(
            "citywatch run is using this data dir; replay through the API (POST /v1/deadletters/replay) "
            "or stop the service first") from exc
    decode = redecoder(settings, Registry.load(settings.devices_file))
    store = DeadLetterStore(settings.deadletter_path)
    try:
        return replay_into(store, decode, spool.append, dry_run=dry_run)
    finally:
        spool.close()
        store.close()
