"""The field corpus (tests/hj212/corpus/packets.yaml) through the framer and the decoder:
each packet gives the answers, the stored lines (values and flags) and the dead-letter
reasons its entry names. The same corpus runs through the real gateway into a real
InfluxDB in tests/integration/test_hj212_corpus_service.py."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

import pytest

from citywatch.model import RawMessage
from ingest.hj212 import DecodeContext, FrameDecoder, decode_frame, decode_framing_error, decode_raw
from ingest.hj212.crc import crc_ok
from ingest.hj212.packet import read_header
from ingest.hj212.reassembly import Reassembler
from ingest.types import Accepted, Rejected
from tests.hj212.corpus_packets import Packet, load

REGISTRY, PACKETS = load()
CTX = DecodeContext(registry=REGISTRY, tz=ZoneInfo("Asia/Shanghai"))
NOW_MS = 1_800_000_000_000  # 2027: after every packet


def test_the_corpus_is_big_and_distinct() -> None:
    frames = [f for p in PACKETS for f in p.frames]
    assert len(set(frames)) == len(frames) >= 30
    assert len({p.id for p in PACKETS}) == len(PACKETS)
    assert all(p.source for p in PACKETS)


def test_the_annex_a_example_crc() -> None:
    [annex] = [p for p in PACKETS if p.id == "annex-a-1062"]
    [frame] = FrameDecoder().feed(annex.wire)
    assert frame.crc == "1C80" and crc_ok(frame.data, frame.crc)


def run(packet: Packet) -> tuple[list, list[bytes]]:
    decoder, reassembler = FrameDecoder(), Reassembler()
    items = decoder.feed(packet.wire)
    items += decoder.settle() + decoder.flush()
    outcomes, answers = [], []
    for item in items:
        if hasattr(item, "crc"):
            d = decode_frame(item, CTX, received_ms=NOW_MS, peer="127.0.0.1:1", reassembler=reassembler)
        else:
            d = decode_framing_error(item, received_ms=NOW_MS, peer="127.0.0.1:1")
        outcomes.append(d.outcome)
        if d.answer is not None:
            answers.append(d.answer)
    return outcomes, answers


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    head, fields, ts = line.split(" ")
    measurement, *tags = head.split(",")
    values: dict[str, object] = {}
    for item in fields.split(","):
        key, _, text = item.partition("=")
        values[key] = text.strip('"') if text.startswith('"') else float(text)
    return measurement, dict(t.split("=") for t in tags), values, int(ts)


@pytest.mark.parametrize("packet", PACKETS, ids=[p.id for p in PACKETS])
def test_corpus_packet(packet: Packet) -> None:
    outcomes, answers = run(packet)
    got_answers = []
    for a in answers:
        [frame] = FrameDecoder().feed(a)
        h = read_header(frame.data)
        got_answers.append(h.get("CN") + (":" + h.cp.removeprefix("QnRtn=") if h.get("CN") == "9011" else ""))
    assert got_answers == packet.answers

    lines = [line for o in outcomes if isinstance(o, Accepted) for line in o.lines]
    data_lines = [parse_line(line) for line in lines if not line.startswith("events,")]
    expected = []
    for s in packet.stores:
        tags = {"device": packet.device.id, "site": packet.device.site} | ({"period": s.period} if s.period else {})
        expected.append((s.measurement, tags, {**s.values, **{f"{k}_flag": v for k, v in s.flags.items()}}, s.ts_ms))
    assert data_lines == expected

    dead = [r.partition(":")[0] for o in outcomes
            for r in (o.reasons if isinstance(o, Rejected) else o.partial)]
    assert dead == packet.dead_letter

    events = [e for o in outcomes if isinstance(o, Accepted) for e in o.events]
    if packet.event:
        [e] = events
        assert e.type == packet.event["type"] and e.attributes["field"] == packet.event["field"]
        assert e.attributes["flag"] == packet.event["flag"] and e.attributes["fault"] is True
    else:
        assert events == []


@pytest.mark.parametrize("packet", [p for p in PACKETS if len(p.frames) > 1 and "split" in p.id],
                         ids=lambda p: p.id)
def test_a_reassembled_upload_replays_from_its_dead_letter_form(packet: Packet) -> None:
    """The stored raw of a reassembled upload is all its frames: replay decodes it again."""
    outcomes, _ = run(packet)
    [accepted] = [o for o in outcomes if isinstance(o, Accepted)]
    assert accepted.raw.payload == packet.wire
    again = decode_raw(RawMessage(accepted.raw.topic, packet.wire, NOW_MS, "hj212"), CTX)
    assert isinstance(again, Accepted) and again.lines == accepted.lines


def test_split_parts_out_of_order_and_a_timeout() -> None:
    [packet] = [p for p in PACKETS if p.id == "hj212-2017-split-with-answers"]
    clock = [0.0]
    reassembler = Reassembler(timeout_s=60, clock=lambda: clock[0])
    frames = [FrameDecoder().feed(f)[0] for f in packet.frames]

    def decode(i: int):
        return decode_frame(frames[i], CTX, received_ms=NOW_MS, peer="p", reassembler=reassembler).outcome

    assert isinstance(decode(2), Rejected) and isinstance(decode(0), Rejected)
    assert isinstance(decode(1), Accepted) and reassembler.pending == 0
    assert isinstance(decode(0), Rejected) and reassembler.pending == 1
    clock[0] = 61.0  # the rest never comes: dropped from memory (the parts stay dead letters)
    assert isinstance(decode(1), Rejected) and reassembler.expired == 1
    assert re.match(r"split_part: part 3 of 3 ", decode(2).reasons[0])  # a new upload: parts 2 and 3, no 1
    assert reassembler.pending == 1


def test_split_limits() -> None:
    reassembler = Reassembler(max_uploads=2, max_parts=4)
    from ingest.hj212.reassembly import Part

    with pytest.raises(ValueError, match="split_limit"):
        reassembler.add(("M", "Q", "2011", 5), 1, Part("", b""))
    for qn in ("1", "2", "3"):
        assert reassembler.add(("M", qn, "2011", 2), 1, Part("", b"")) is None
    assert reassembler.pending == 2 and reassembler.expired == 1
