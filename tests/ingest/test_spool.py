"""ingest.spool: durable appends, torn-tail recovery, exact resume from the checkpoint."""

from __future__ import annotations

import os

import pytest

from ingest.spool import Spool, SpoolLocked


def lines(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def drain(spool: Spool, max_lines: int = 1000) -> list[bytes]:
    out = []
    while (batch := spool.read_batch(max_lines)) is not None:
        out.extend(batch.lines)
        spool.commit(batch)
    return out


def test_append_then_read_in_order_and_commit_empties_the_backlog(tmp_path):
    spool = Spool(tmp_path)
    spool.append(lines("a", 3))
    spool.append(lines("b", 2))
    assert spool.backlog_lines == 5
    assert drain(spool) == [b"a0", b"a1", b"a2", b"b0", b"b1"]
    assert spool.backlog_lines == 0 and spool.read_batch(10) is None


def test_restart_resumes_exactly_after_the_checkpoint(tmp_path):
    spool = Spool(tmp_path)
    spool.append(lines("a", 3))
    spool.append(lines("b", 3))
    first = spool.read_batch(3)
    assert first.lines == [b"a0", b"a1", b"a2"]
    spool.commit(first)
    spool.close()
    again = Spool(tmp_path)
    assert again.backlog_lines == 3
    assert drain(again) == [b"b0", b"b1", b"b2"]


def test_torn_tail_from_a_crash_is_cut_and_later_appends_stay_readable(tmp_path):
    spool = Spool(tmp_path)
    spool.append(lines("ok", 2))
    spool.close()
    seg = next(tmp_path.glob("*.seg"))
    with open(seg, "ab") as f:
        f.write(b"\x10\x00\x00\x00garbage")  # a header promising 16 bytes, then a crash
    spool = Spool(tmp_path)
    spool.append(["after"])
    assert drain(spool) == [b"ok0", b"ok1", b"after"]


def test_segments_roll_and_finished_ones_are_deleted(tmp_path):
    spool = Spool(tmp_path, segment_bytes=4096)
    for i in range(20):
        spool.append([f"line-{i}-" + "x" * 500])
    assert len(list(tmp_path.glob("*.seg"))) > 2
    assert len(drain(spool, max_lines=3)) == 20
    assert len(list(tmp_path.glob("*.seg"))) == 1  # only the segment being written


def test_read_batch_respects_the_line_limit_on_record_boundaries(tmp_path):
    spool = Spool(tmp_path)
    for i in range(10):
        spool.append(lines(f"r{i}-", 100))
    batch = spool.read_batch(250)
    assert len(batch.lines) == 200  # two whole records; the third would pass 250


def test_a_second_process_cannot_append_to_the_same_spool(tmp_path):
    spool = Spool(tmp_path)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()  # free again once the first is closed


def test_commit_out_of_order_is_refused(tmp_path):
    spool = Spool(tmp_path)
    spool.append(["a"])
    batch = spool.read_batch(10)
    spool.commit(batch)
    spool.append(["b"])
    with pytest.raises(Exception, match="out of order"):
        spool.commit(batch)


def test_unicode_lines_survive(tmp_path):
    spool = Spool(tmp_path)
    spool.append(['events,device=D1,kind=dust,site=S1,type=vehicle_exit plate="晋E12345" 1'])
    assert drain(spool)[0].decode() .endswith('plate="晋E12345" 1')
    assert oct(os.stat(next(tmp_path.glob("*.seg"))).st_mode)[-3:] == "640"


def test_a_record_is_length_crc_and_the_newline_terminated_utf8_lines(tmp_path):
    import struct
    import zlib

    spool = Spool(tmp_path)
    group = ["dust,device=D1,site=S1 pm10=1.0 1", 'events,device=D1 plate="晋E12345" 2', "w f=2.0 3"]
    end = spool.append(group)
    data = next(tmp_path.glob("*.seg")).read_bytes()
    payload = ("\n".join(group) + "\n").encode()
    assert data == struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    assert end.offset == len(data) and spool.backlog_bytes == len(data) and spool.backlog_lines == 3
    assert drain(spool) == [line.encode() for line in group]


def test_a_group_over_4_mb_is_split_into_records_of_whole_lines(tmp_path):
    spool = Spool(tmp_path)
    group = [f"m,device=D{i} f={i}.5,text=\"{'é' * 200}\" {i}" for i in range(12_000)]  # ≈ 5 MB
    spool.append(group)
    spool.close()
    again = Spool(tmp_path)  # recovery reads every record back: none is torn
    assert again.backlog_lines == len(group)
    first = again.read_batch(1)  # whole records only: the first one, not the whole group
    assert 1 < first.count < len(group)
    again.commit(first)
    assert drain(again, max_lines=100_000) == [line.encode() for line in group][first.count:]


def test_a_short_write_fails_the_append_and_leaves_the_spool_readable(tmp_path, monkeypatch):
    from citywatch.errors import SpoolError

    spool = Spool(tmp_path)
    spool.append(["ok"])
    real_writev = os.writev

    def short_writev(fd, buffers):
        return real_writev(fd, [b"".join(buffers)[:5]])  # a full disk: only part of the record

    monkeypatch.setattr(os, "writev", short_writev)
    with pytest.raises(SpoolError, match="short write"):
        spool.append(["lost"])
    monkeypatch.undo()
    spool.append(["after"])
    assert drain(spool) == [b"ok", b"after"]
