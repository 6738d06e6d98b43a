"""citywatch.lineproto: the cached `LineFormatter` writes exactly the bytes of `reading_line`."""

from __future__ import annotations

import math
import random
import struct

import pytest

from citywatch.lineproto import LineFormatter, reading_line
from citywatch.model import Reading

TS = 1_795_737_600_000


def reading(values: dict, kind: str = "dust", site: str = "S1", device: str = "D1") -> Reading:
    return Reading(kind, site, device, TS, values)


@pytest.mark.parametrize("values", [
    {"pm10": 86.0, "spray_on": True, "cover_ratio": 100.0, "hoarding_intact": False},
    {"pm10": 0.0}, {"pm10": -0.0}, {"pm10": 1.0}, {"pm10": 0.1 + 0.2}, {"pm10": 1e16}, {"pm10": 1e-7},
    {"pm10": 5e-324}, {"pm10": 1.7976931348623157e308}, {"pm10": 86}, {"pm10": 2**53 + 1}, {"pm10": 10**30},
    {"a b": 1.5, "c,d": 2.5, "e=f": 3.5, "g%sh": 4.5, "%%": 5.5},  # keys that need escaping, or %-quoting
])
def test_same_bytes_as_reading_line(values):
    formatter = LineFormatter()
    for _ in range(2):  # a miss, then a hit of every cache
        assert formatter.reading(reading(values)) == reading_line(reading(values))


def test_the_float_cache_never_mixes_up_values_that_compare_equal():
    """0.0 == -0.0, 1.0 == True == 1: each still gets its own text, whatever came first."""
    formatter = LineFormatter()
    sequence = [{"x": 1.0}, {"x": True}, {"x": 1}, {"x": -0.0}, {"x": 0.0}, {"x": False}, {"x": 0}, {"x": -0.0},
                {"x": 1.0}, {"x": True}]
    assert [formatter.reading(reading(v)).split(" ")[1] for v in sequence] == [
        "x=1.0", "x=true", "x=1.0", "x=-0.0", "x=0.0", "x=false", "x=0.0", "x=-0.0", "x=1.0", "x=true"]


def test_random_floats_and_field_sets_match_reading_line():
    rng = random.Random(5)
    formatter = LineFormatter(max_floats=50)  # small, so the cache is cleared along the way
    names = ["pm25", "pm10", "noise", "spray_on", "humidity"]
    for i in range(3000):
        values: dict = {}
        for name in rng.sample(names, rng.randint(1, len(names))):
            if name == "spray_on":
                values[name] = rng.random() < 0.5
            elif rng.random() < 0.1:  # any bit pattern but NaN and infinities
                bits = struct.unpack("<d", rng.randbytes(8))[0]
                values[name] = bits if math.isfinite(bits) else 0.5
            else:
                values[name] = round(rng.uniform(-50, 500), rng.randint(0, 3))
        r = reading(values, device=f"D{i % 7}")
        assert formatter.reading(r) == reading_line(r)


def test_hj212_flags_are_string_fields_beside_the_values():
    r = Reading("dust", "S1", "D1", 1000, {"pm10": 86.5}, quality={"pm10": "N", "pm25": "D"})
    line = 'dust,device=D1,site=S1 pm10=86.5,pm10_flag="N",pm25_flag="D" 1000'
    assert reading_line(r) == line and LineFormatter().reading(r) == line
    flag_only = Reading("dust", "S1", "D1", 1000, {}, quality={"tsp": "T"})
    assert reading_line(flag_only) == 'dust,device=D1,site=S1 tsp_flag="T" 1000'
