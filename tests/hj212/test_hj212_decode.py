"""The pure decode stage: verified packets, answers, reasons, flags, scale, aliases, storage."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from citywatch.registry import Registry
from ingest.hj212 import DecodeContext, Decoded, FrameDecoder, decode_frame, decode_raw, read_header
from ingest.hj212.crc import crc_ok
from ingest.hj212.framing import Frame, encode_frame
from ingest.hj212.testing import encode_packet
from ingest.types import Accepted, Rejected
from tests.hj212.conftest import make_registry
from tests.hj212.samples import MINUTE, MN, NOW_MS, PW, REALTIME

TZ = ZoneInfo("Asia/Shanghai")
WHEN = datetime(2024, 6, 1, 12, 0, 0)  # local time


def frame_of(raw: bytes) -> Frame:
    [frame] = FrameDecoder().feed(raw)
    assert isinstance(frame, Frame)
    return frame


def decode(raw: bytes, ctx: DecodeContext) -> Decoded:
    return decode_frame(frame_of(raw), ctx, received_ms=NOW_MS, peer="10.0.0.7:40000")


def packet(values: dict, **kw: object) -> bytes:
    args: dict = {"mn": MN, "pw": PW, "data_time": WHEN, "values": values} | kw
    return encode_packet(**args)


def test_verified_realtime_packet(ctx: DecodeContext) -> None:
    d = decode(REALTIME, ctx)
    assert isinstance(d.outcome, Accepted)
    [r] = d.outcome.readings
    assert (r.kind, r.site, r.device) == ("dust", "S0001", "D00001")
    assert r.ts_ms == int(datetime(2024, 6, 1, 12, tzinfo=TZ).timestamp() * 1000) == 1717214400000
    assert r.values == {"tsp": 185.0, "pm10": 96.0, "pm25": 48.0, "noise": 62.3, "temperature": 26.4,
                        "humidity": 41.0, "pressure": 93.10, "wind_speed": 2.1, "wind_dir": 135.0}
    assert r.quality == {f: "N" for f in r.values}  # every value keeps its flag
    assert d.outcome.lines == ("dust,device=D00001,site=S0001 tsp=185.0,pm10=96.0,pm25=48.0,noise=62.3,"
                               "temperature=26.4,humidity=41.0,pressure=93.1,wind_speed=2.1,wind_dir=135.0,"
                               'tsp_flag="N",pm10_flag="N",pm25_flag="N",noise_flag="N",temperature_flag="N",'
                               'humidity_flag="N",pressure_flag="N",wind_speed_flag="N",wind_dir_flag="N" '
                               "1717214400000",)
    assert d.outcome.raw.topic == f"hj212/{MN}" and d.outcome.raw.payload == REALTIME
    assert d.outcome.raw.source == "hj212"


def test_flag5_gets_9014_echoing_qn(ctx: DecodeContext) -> None:
    answer = decode(REALTIME, ctx).answer
    assert answer is not None
    f = frame_of(answer)
    assert crc_ok(f.data, f.crc)  # the answer's own CRC
    assert f.data == f"QN=20240601120000000;ST=91;CN=9014;PW={PW};MN={MN};Flag=4;CP=&&&&".encode()
    assert int(answer[2:6]) == len(f.data)


def test_verified_minute_packet_no_answer(ctx: DecodeContext) -> None:
    d = decode(MINUTE, ctx)  # Flag=4: 2017, no answer wanted
    assert isinstance(d.outcome, Accepted) and d.answer is None
    [alive] = d.outcome.readings  # an aggregate: not fed to the real-time alert windows,
    assert alive.values == {} and alive.device == "D00001"  # only "the device is alive" (no-data rules)
    ts = int(datetime(2024, 6, 1, 12, 50, tzinfo=TZ).timestamp() * 1000)
    assert d.outcome.lines == (
        "dust_agg,device=D00001,period=minute,site=S0001 pm10=88.4,noise=63.9,pm10_min=71.0,pm10_max=131.0,"
        f'noise_min=55.2,noise_max=78.4,pm10_flag="N",noise_flag="N" {ts}',)


@pytest.mark.parametrize("cn, period", [(2051, "minute"), (2061, "hour"), (2031, "day")])
def test_interval_data_goes_to_the_agg_measurement_with_its_period(ctx: DecodeContext, cn: int, period: str) -> None:
    d = decode(packet({"a34002": (60.0, 80.0, 120.0), "LA": (50.0, 60.0, 70.0)}, cn=cn), ctx)
    assert isinstance(d.outcome, Accepted)
    assert [r.values for r in d.outcome.readings] == [{}]  # not fed to the real-time alert windows
    [line] = d.outcome.lines
    assert line.startswith(f"dust_agg,device=D00001,period={period},site=S0001 pm10=80.0,noise=60.0,"
                           "pm10_min=60.0,pm10_max=120.0,noise_min=50.0,noise_max=70.0,")


def test_data_flags_kept_as_quality(ctx: DecodeContext) -> None:
    d = decode(packet({"a34002": 96.0, "a34004": 40.0, "LA": 60.0, "a01001": 20.0},
                      flags={"a34002": "M", "a34004": "S", "LA": "D"}), ctx)
    assert isinstance(d.outcome, Accepted)
    [r] = d.outcome.readings
    assert r.values == {"pm10": 96.0, "pm25": 40.0, "noise": 60.0, "temperature": 20.0}
    assert r.quality == {"pm10": "M", "pm25": "S", "noise": "D", "temperature": "N"}
    # D (fault): a sensor_fault event beside the reading, for the device-fault rule
    [e] = d.outcome.events
    assert (e.type, e.attributes) == ("sensor_fault", {"field": "noise", "flag": "D", "fault": True})


def test_flagged_value_out_of_range_is_dropped_not_fatal(ctx: DecodeContext) -> None:
    d = decode(packet({"a34002": 96.0, "LA": 0.0}, flags={"LA": "D"}), ctx)
    assert isinstance(d.outcome, Accepted)
    [r] = d.outcome.readings
    assert r.values == {"pm10": 96.0} and r.quality == {"pm10": "N", "noise": "D"}


def test_valid_value_out_of_range_rejects_with_reason(ctx: DecodeContext) -> None:
    d = decode(packet({"a34002": -5.0, "a01002": 140.0}), ctx)
    assert isinstance(d.outcome, Rejected)
    assert [r.split(":")[0] for r in d.outcome.reasons] == ["out_of_range", "out_of_range", "no_values"]
    assert "pm10=-5" in d.outcome.reasons[0] and "humidity=140" in d.outcome.reasons[1]
    assert d.answer is not None and b"CN=9014" in d.answer  # received and dead-lettered: no re-send


def test_partial_acceptance_stores_the_valid_fields_and_dead_letters_the_rest(ctx: DecodeContext) -> None:
    """A monitor reporting 0.0 for sensors it does not have (pressure, noise) and an
    unknown code: PM values stored, the rest named in `partial` (dead-lettered)."""
    d = decode(packet({"a34002": 96.0, "a34004": 41.0, "a01006": 0.0, "LA": 0.0, "a21026": 12.0}), ctx)
    assert isinstance(d.outcome, Accepted)
    [r] = d.outcome.readings
    assert r.values == {"pm10": 96.0, "pm25": 41.0}
    assert [p.split(":")[0] for p in d.outcome.partial] == ["out_of_range", "out_of_range", "unknown_code"]
    assert d.answer is not None and b"CN=9014" in d.answer


def test_out_of_range_reason_for_a_field_bounded_on_one_side_only() -> None:
    """kinds.yaml may give a field only a min (or only a max); the reason shows the open end."""
    from dataclasses import replace

    from citywatch.schema import kinds

    dust = kinds()["dust"]
    open_top = replace(dust, fields={**dust.fields, "pm10": replace(dust.fields["pm10"], max=None)})
    ctx = DecodeContext(registry=make_registry(), tz=TZ, kinds={**kinds(), "dust": open_top})
    d = decode(packet({"a34002": -5.0}), ctx)
    assert isinstance(d.outcome, Rejected)
    assert d.outcome.reasons[0].startswith("out_of_range: pm10=-5 (a34002-Rtd) outside [0, inf]")


def test_tianjin_aliases_and_per_device_aliases_and_scale() -> None:
    reg = make_registry(hj212_scale=0.001, hj212_aliases={"a34005": "pm25", "NOISE2": "noise"})
    ctx = DecodeContext(registry=reg, tz=TZ)
    d = decode(packet({"PM10": 140600.0, "TSP": 300000.0, "a34005": 50000.0, "WD": 90.0, "WS": 1.5,
                       "TEM": 20.5, "NOISE2": 61.0}), ctx)
    assert isinstance(d.outcome, Accepted)
    [r] = d.outcome.readings
    assert r.values == pytest.approx({"pm10": 140.6, "tsp": 300.0, "pm25": 50.0, "wind_dir": 90.0,
                                      "wind_speed": 1.5, "temperature": 20.5, "noise": 61.0})


def test_voice_is_noise(ctx: DecodeContext) -> None:
    d = decode(packet({"Voice": 58.0}), ctx)
    assert isinstance(d.outcome, Accepted) and d.outcome.readings[0].values == {"noise": 58.0}


def test_duplicate_field_rejected(ctx: DecodeContext) -> None:
    d = decode(packet({"a34002": 96.0, "PM10": 97.0}), ctx)
    assert isinstance(d.outcome, Accepted) and d.outcome.readings[0].values == {"pm10": 96.0}
    assert d.outcome.partial[0].startswith("duplicate_field")


def test_unknown_codes_dead_lettered_or_ignored_and_empty_packet_rejected() -> None:
    ctx = DecodeContext(registry=make_registry(hj212_ignore=frozenset({"a21026"})), tz=TZ)
    ok = decode(packet({"a34002": 96.0, "a99999": 1.0, "a21026": 3.0}), ctx)
    assert isinstance(ok.outcome, Accepted)
    assert len(ok.outcome.partial) == 1 and ok.outcome.partial[0].startswith("unknown_code: a99999 ")
    empty = decode(packet({"a99999": 1.0}), ctx)
    assert isinstance(empty.outcome, Rejected)
    assert [r.split(":")[0] for r in empty.outcome.reasons] == ["unknown_code", "no_values"]


def test_hj212_2025_readiness(ctx: DecodeContext) -> None:
    d = decode(packet({"a34002": 96.0}, rf=True), ctx)  # re-send marker, 24-char MN
    assert isinstance(d.outcome, Accepted) and len(MN) == 24


@pytest.mark.parametrize("raw, reason, rtn", [
    # wrong CRC: both the reason and the QnRtn=9 answer
    (REALTIME[:-6] + b"84C2\r\n", "bad_crc", 9),
    # wrong password: the reason never contains either password
    (packet({"a34002": 1.0}, pw="654321"), "wrong_pw", 3),
    # unknown MN
    (packet({"a34002": 1.0}, mn="4A4300000000000000D99999"), "unknown_mn", 4),
    # an unsupported command (e.g. a platform command echoed back)
    (packet({"a34002": 1.0}, cn=3020), "unsupported_cn", 8),
    # a malformed QN
    (packet({"a34002": 1.0}, qn="2024"), "bad_qn", 7),
])
def test_refusals_answer_9011_with_qnrtn(ctx: DecodeContext, raw: bytes, reason: str, rtn: int) -> None:
    d = decode(raw, ctx)
    assert isinstance(d.outcome, Rejected)
    assert d.outcome.reasons[0].startswith(reason + ":")
    assert "654321" not in " ".join(d.outcome.reasons) and PW not in " ".join(d.outcome.reasons)
    assert d.answer is not None
    f = frame_of(d.answer)
    assert crc_ok(f.data, f.crc)
    assert b";ST=91;CN=9011;" in f.data and f.data.endswith(f"CP=&&QnRtn={rtn}&&".encode())


def test_no_answer_when_not_requested(ctx: DecodeContext) -> None:
    d = decode(packet({"a34002": 1.0}, pw="000000", flag=4), ctx)
    assert isinstance(d.outcome, Rejected) and d.answer is None


def reframe(raw: bytes) -> bytes:
    """Re-frame an edited packet so that only the edit is wrong (not the CRC)."""
    return encode_frame(raw[6:-6])


@pytest.mark.parametrize("text", [b"abc", b"nan", b"inf", b"1_000", b""])
def test_bad_values(ctx: DecodeContext, text: bytes) -> None:
    raw = reframe(packet({"a34002": 1.0}).replace(b"a34002-Rtd=1", b"a34002-Rtd=" + text))
    d = decode(raw, ctx)
    assert isinstance(d.outcome, Rejected) and d.outcome.reasons[0].startswith("bad_value")
    both = decode(reframe(packet({"a34002": 1.0, "a34004": 2.0}).replace(b"a34002-Rtd=1", b"a34002-Rtd=" + text)),
                  ctx)
    assert isinstance(both.outcome, Accepted) and both.outcome.readings[0].values == {"pm25": 2.0}
    assert both.outcome.partial[0].startswith("bad_value: a34002-Rtd")


def test_bad_datatime_and_future(ctx: DecodeContext) -> None:
    bad = reframe(packet({"a34002": 1.0}).replace(b"DataTime=20240601120000", b"DataTime=20241301120000"))
    d = decode(bad, ctx)
    assert isinstance(d.outcome, Rejected) and d.outcome.reasons[0].startswith("bad_datatime")
    future = decode(packet({"a34002": 1.0}, data_time=datetime(2030, 1, 1)), ctx)
    assert isinstance(future.outcome, Rejected) and future.outcome.reasons[0].startswith("future_timestamp")
    # A monitor whose clock was never set: the same 2000-01-01 floor as MQTT readings.
    unset = decode(packet({"a34002": 1.0}, data_time=datetime(1999, 12, 31, 23, 59, 59)), ctx)
    assert isinstance(unset.outcome, Rejected)
    assert unset.outcome.reasons == ("bad_datatime: DataTime 19991231235959 is before 2000-01-01",)
    ok = decode(packet({"a34002": 1.0}, data_time=datetime(2000, 1, 1, 8, 0, 0)), ctx)  # 00:00 UTC
    assert isinstance(ok.outcome, Accepted)


def test_modbus_device() -> None:
    ctx = DecodeContext(registry=make_registry(hj212_crc="modbus"), tz=TZ)
    raw = packet({"a34002": 96.0}, crc="modbus")
    d = decode(raw, ctx)
    assert isinstance(d.outcome, Accepted)
    assert d.answer is not None
    f = frame_of(d.answer)
    assert crc_ok(f.data, f.crc, "modbus")  # answered in the device's own CRC dialect
    strict = decode(raw, DecodeContext(registry=make_registry(), tz=TZ))
    assert isinstance(strict.outcome, Rejected) and strict.outcome.reasons[0].startswith("bad_crc")


def test_crc_off_device() -> None:
    ctx = DecodeContext(registry=make_registry(hj212_crc="off"), tz=TZ)
    d = decode(REALTIME[:-6] + b"0000\r\n", ctx)
    assert isinstance(d.outcome, Accepted)


def test_open_mode_without_registry() -> None:
    ctx = DecodeContext(registry=Registry.empty(), tz=TZ)
    d = decode(REALTIME, ctx)
    assert isinstance(d.outcome, Accepted)
    assert (d.outcome.readings[0].site, d.outcome.readings[0].device) == ("hj212", MN)


def test_split_bit_without_pnum_is_one_packet(ctx: DecodeContext) -> None:
    d = decode(packet({"a34002": 1.0}, flag=7), ctx)  # D bit without PNUM/PNO: common firmware
    assert isinstance(d.outcome, Accepted) and d.outcome.readings[0].values == {"pm10": 1.0}


def test_decode_raw_for_replay(ctx: DecodeContext) -> None:
    first = decode(REALTIME, ctx).outcome
    again = decode_raw(first.raw, ctx)
    assert isinstance(again, Accepted) and again.readings == first.readings  # type: ignore[union-attr]
    assert again.raw == first.raw


def test_header_is_read_leniently() -> None:
    h = read_header(b"QN=1;MN=ABC;Flag=x;CP=&&oops")
    assert h.mn == "ABC" and h.flag is None and h.cp is None and h.problems
