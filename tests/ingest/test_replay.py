"""Dead-letter replay (`ingest.replay`) with a real SQLite store; the decoder is the real one
except where a test needs it to fail."""

from __future__ import annotations

import json
from pathlib import Path

from citywatch.model import RawMessage
from ingest.deadletters import DeadLetterStore
from ingest.decode import Decoder
from ingest.replay import replay_into

NOW = 1_795_737_600_000  # 2026-11-27T00:00:00Z


def _letter(device: str, pm10: float) -> tuple[RawMessage, list[str]]:
    payload = json.dumps({"ts": NOW - 60_000, "values": {"pm10": pm10}}).encode()
    return RawMessage(f"telemetry/dust/S1/{device}", payload, NOW - 50_000), ["unknown_device: then"]


def test_a_decoder_that_fails_on_one_letter_does_not_stop_the_replay(tmp_path: Path) -> None:
    """A decoder bug on one dead letter used to abort the whole replay (the consumer guards
    its decode, replay did not): now that letter keeps an internal_error reason and the
    others are replayed."""
    store = DeadLetterStore(tmp_path / "dl.sqlite")
    store.add_many([_letter("D1", 10.0), _letter("BOOM", 20.0), _letter("D3", 30.0)])
    decoder = Decoder(clock=lambda: NOW)

    def decode(raw: RawMessage):
        if raw.topic.endswith("/BOOM"):
            raise OverflowError("int too large to convert to float")
        return decoder.decode(raw)

    appended: list[str] = []
    result = replay_into(store, decode, appended.extend)
    assert (result.accepted, result.still_rejected) == (2, 1)
    assert [line.split(" ")[0] for line in appended] == ["dust,device=D1,site=S1", "dust,device=D3,site=S1"]
    (left,) = store.list()
    assert left.topic.endswith("/BOOM")
    assert left.reasons == ("internal_error: OverflowError: int too large to convert to float",)
    assert store.count(include_replayed=True) == 3
    store.close()


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    store = DeadLetterStore(tmp_path / "dl.sqlite")
    store.add_many([_letter("D1", 10.0), _letter("D2", -5.0)])  # -5 is out of range: still rejected
    appended: list[str] = []
    result = replay_into(store, Decoder(clock=lambda: NOW).decode, appended.extend, dry_run=True)
    assert (result.accepted, result.still_rejected) == (1, 1)
    assert appended == [] and store.count() == 2
    assert [d.reasons for d in store.list()] == [("unknown_device: then",)] * 2
    store.close()
