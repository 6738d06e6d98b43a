"""Framing torture: every input byte ends up in exactly one frame or one error."""

from __future__ import annotations

import pytest

from ingest.hj212.crc import crc_hex

from ingest.hj212.framing import Frame, FrameDecoder, FramingError, encode_frame
from tests.hj212.samples import MINUTE, REALTIME


def feed_all(decoder: FrameDecoder, *chunks: bytes) -> list[Frame | FramingError]:
    out: list[Frame | FramingError] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


def kinds(items: list[Frame | FramingError]) -> list[str]:
    return ["frame" if isinstance(i, Frame) else i.reason.split(":")[0] for i in items]


def test_one_frame() -> None:
    [frame] = FrameDecoder().feed(REALTIME)
    assert isinstance(frame, Frame)
    assert frame.raw == REALTIME and frame.crc == "84C1" and frame.data == REALTIME[6:-6]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 371])
def test_split_at_every_size(size: int) -> None:
    stream = REALTIME + MINUTE
    out = feed_all(FrameDecoder(), *(stream[i:i + size] for i in range(0, len(stream), size)))
    assert [f.raw for f in out if isinstance(f, Frame)] == [REALTIME, MINUTE]
    assert kinds(out) == ["frame", "frame"]


def test_merged_frames_in_one_read() -> None:
    out = FrameDecoder().feed(REALTIME + MINUTE + REALTIME)
    assert kinds(out) == ["frame", "frame", "frame"]


def test_garbage_between_frames_resyncs() -> None:
    d = FrameDecoder()
    out = feed_all(d, b"\x00\xffAT+CSQ\r\n" + REALTIME + b"noise#", MINUTE)
    assert kinds(out) == ["garbage", "frame", "garbage", "frame"]
    assert out[0].raw == b"\x00\xffAT+CSQ\r\n"  # type: ignore[union-attr]
    assert out[2].raw == b"noise#"  # type: ignore[union-attr]
    assert d.pending == 0


def test_single_hash_split_from_second() -> None:
    out = feed_all(FrameDecoder(), b"xx#", REALTIME[1:])
    # "xx" is garbage; the '#' kept back joins the rest of the header.
    assert kinds(out) == ["garbage", "frame"]


def test_length_declared_too_long_keeps_next_frame() -> None:
    # A wrong CRC, so nothing proves the frame: says 400, carries 372, the CRLF comes early.
    liar = b"##0400" + REALTIME[6:-6] + b"0000\r\n"
    out = FrameDecoder().feed(liar + MINUTE)
    assert kinds(out) == ["length_mismatch", "frame"]
    assert out[0].raw == liar  # type: ignore[union-attr]
    assert "declared 400" in out[0].reason and "carries 372" in out[0].reason  # type: ignore[union-attr]


def test_length_declared_too_short() -> None:
    liar = b"##0300" + REALTIME[6:-6] + b"0000\r\n"
    out = FrameDecoder().feed(liar + MINUTE)
    assert kinds(out)[-1] == "frame" and out[-1].raw == MINUTE  # type: ignore[union-attr]
    assert kinds(out)[0] == "bad_terminator"
    assert b"".join(i.raw for i in out) == liar + MINUTE


@pytest.mark.parametrize("declared", [372 + 4, 372 + 6, 372 + 1, 300, 9])
def test_a_wrong_length_is_forgiven_when_the_crc_proves_the_frame(declared: int) -> None:
    """Vendors that count the CRC (+4) or CRC and CR LF (+6) in the length, or miscount."""
    liar = b"##%04d" % declared + REALTIME[6:]
    out = FrameDecoder().feed(liar + MINUTE)
    assert kinds(out) == ["frame", "frame"]
    assert out[0].data == REALTIME[6:-6] and out[0].raw == liar  # type: ignore[union-attr]


def test_frames_without_crlf_back_to_back_and_a_late_crlf_is_eaten() -> None:
    bare_rt, bare_min = REALTIME[:-2], MINUTE[:-2]
    decoder = FrameDecoder()
    out = decoder.feed(bare_rt + bare_min + bare_rt)
    # The last one may still get its CR LF: only settle() (the input paused) takes it.
    assert kinds(out) == ["frame", "frame"] and [f.raw for f in out] == [bare_rt, bare_min]  # type: ignore[union-attr]
    assert decoder.settleable
    [last] = decoder.settle()
    assert last.raw == bare_rt and last.data == REALTIME[6:-6] and decoder.pending == 0
    assert decoder.feed(b"\r") == [] and decoder.feed(b"\n" + MINUTE) == [FrameDecoder().feed(MINUTE)[0]]
    assert decoder.eaten == 2 and decoder.pending == 0


def test_settle_does_not_take_a_frame_the_crc_does_not_prove() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(REALTIME[:-6] + b"0000") == []
    assert decoder.settleable and decoder.settle() == [] and decoder.pending == len(REALTIME) - 2
    assert kinds(decoder.flush()) == ["truncated"]


def test_a_modbus_crc_also_proves_a_frame() -> None:
    data = REALTIME[6:-6]
    bare = b"##%04d" % (len(data) + 6) + data + crc_hex(data, "modbus").encode()
    out = FrameDecoder().feed(bare + MINUTE)
    assert kinds(out) == ["frame", "frame"] and out[0].raw == bare  # type: ignore[union-attr]


def test_truncated_frame_followed_by_new_frame() -> None:
    cut = REALTIME[:200]
    out = FrameDecoder().feed(cut + MINUTE)
    assert kinds(out) == ["truncated", "frame"]
    assert out[0].raw == cut  # type: ignore[union-attr]


def test_bad_length_field() -> None:
    out = FrameDecoder().feed(b"##03a2QN=1;CP=&&&&0000\r\n" + MINUTE)
    assert kinds(out) == ["bad_length", "frame"]


def test_oversize_is_refused_without_buffering() -> None:
    d = FrameDecoder(max_data=1024)
    body = b"QN=" + b"9" * 5000
    out = feed_all(d, b"##5003", body[:2000], body[2000:], b"ABCD\r\n" + MINUTE)
    assert kinds(out) == ["oversize", "frame"]
    err = out[0]
    assert isinstance(err, FramingError)
    assert err.discarded == 6 + len(body) + 6 and len(err.raw) <= 1024 + 12
    assert "first" in err.reason  # says that only part of the bytes were kept


def test_buffer_stays_bounded_under_endless_garbage() -> None:
    d = FrameDecoder(max_data=256)
    for _ in range(100):
        d.feed(b"x" * 10_000)
    assert len(d._buf) <= 1  # internal: no growth (garbage is counted, not kept)
    [err] = d.flush()
    assert err.discarded == 1_000_000 and len(err.raw) <= 256 + 12


def test_bad_crc_field() -> None:
    out = FrameDecoder().feed(REALTIME[:-6] + b"84CZ\r\n")
    assert kinds(out) == ["bad_crc_field"]


def test_flush_reports_partial_frame() -> None:
    d = FrameDecoder()
    assert d.feed(REALTIME[:100]) == []
    assert d.pending == 100
    [err] = d.flush()
    assert err.reason.startswith("truncated") and err.raw == REALTIME[:100]
    assert d.pending == 0 and d.flush() == []


def test_encode_frame_roundtrip() -> None:
    data = REALTIME[6:-6]
    assert encode_frame(data) == REALTIME
    with pytest.raises(ValueError):
        encode_frame(b"x" * 10_000)


def test_no_byte_lost() -> None:
    stream = b"junk" + REALTIME + b"##00" + b"##9999zz" + MINUTE[:50] + REALTIME + b"\r\n" + MINUTE
    d = FrameDecoder()
    out = feed_all(d, *(stream[i:i + 13] for i in range(0, len(stream), 13))) + d.flush()
    assert sum(len(i.raw) if isinstance(i, Frame) else i.discarded for i in out) == len(stream)
    assert [i.raw for i in out if isinstance(i, Frame)] == [REALTIME, REALTIME, MINUTE]


@pytest.mark.parametrize("terminator", [b"\n", b"\r", b"\n\r", b""])
def test_an_odd_terminator_is_forgiven_when_the_crc_proves_the_frame(terminator: bytes) -> None:
    odd = REALTIME[:-2] + terminator
    out = FrameDecoder().feed(odd + MINUTE + odd + MINUTE)
    assert kinds(out) == ["frame"] * 4
    assert out[0].data == REALTIME[6:-6] and out[2].data == REALTIME[6:-6]  # type: ignore[union-attr]
    assert out[1].raw == MINUTE  # type: ignore[union-attr]
