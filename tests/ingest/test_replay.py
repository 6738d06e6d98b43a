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


def test_an_hj212_partial_dead_letter_stays_until_a_fix_makes_it_whole(tmp_path: Path) -> None:
    """Partial acceptance: the valid fields were stored, the frame is a dead letter with the
    reasons of the rest. Replay keeps it (with fresh reasons) while it is still partial, and
    stores and marks it once a registry fix makes the whole packet valid."""
    from zoneinfo import ZoneInfo

    from ingest.hj212 import DecodeContext, FrameDecoder, decode_frame, decode_raw
    from ingest.hj212.testing import encode_packet
    from ingest.types import Accepted
    from tests.hj212.conftest import make_registry
    from tests.hj212.samples import MN, PW
    from datetime import datetime

    frame = encode_packet(mn=MN, pw=PW, data_time=datetime(2024, 6, 1, 12), values={"a34002": 96.0, "a21026": 12.0})
    [parsed] = FrameDecoder().feed(frame)
    before = DecodeContext(registry=make_registry(), tz=ZoneInfo("Asia/Shanghai"))
    first = decode_frame(parsed, before, received_ms=NOW, peer="p").outcome
    assert isinstance(first, Accepted) and first.partial and first.partial[0].startswith("unknown_code: a21026")
    store = DeadLetterStore(tmp_path / "dl.sqlite")
    store.add_many([(first.raw, list(first.partial))])

    appended: list[str] = []
    still = replay_into(store, lambda raw: decode_raw(raw, before), appended.extend)
    assert (still.accepted, still.still_rejected, appended) == (0, 1, [])
    (left,) = store.list()
    assert left.reasons[0].startswith("unknown_code: a21026")

    fixed = DecodeContext(registry=make_registry(hj212_aliases={"a21026": "pm25"}), tz=ZoneInfo("Asia/Shanghai"))
    done = replay_into(store, lambda raw: decode_raw(raw, fixed), appended.extend)
    assert (done.accepted, done.still_rejected) == (1, 0)
    assert appended == ['dust,device=D00001,site=S0001 pm10=96.0,pm25=12.0,pm10_flag="N",pm25_flag="N" '
                        '1717214400000']
    assert list(store.iter_pending()) == []
