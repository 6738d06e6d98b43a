"""HJ 212 command numbers, answer codes and pollutant codes → canonical fields (docs/domain.md §4)."""

from __future__ import annotations

from enum import IntEnum
from types import MappingProxyType
from typing import Final, Mapping

from citywatch.model import VALID_FLAGS as MODEL_VALID_FLAGS


class Cn(IntEnum):
    REALTIME = 2011
    MINUTE = 2051
    HOURLY = 2061
    DAILY = 2031
    REQUEST_ANSWER = 9011
    DATA_ANSWER = 9014


DATA_CNS: Final = frozenset({Cn.REALTIME, Cn.MINUTE, Cn.HOURLY, Cn.DAILY})
ST_SYSTEM: Final = "91"  # system interaction: what answers carry


class QnRtn(IntEnum):
    """Request-answer result codes (CN=9011, HJ 212-2017 table 9)."""

    READY = 1
    REFUSED = 2
    PW_ERROR = 3
    MN_ERROR = 4
    ST_ERROR = 5
    FLAG_ERROR = 6
    QN_ERROR = 7
    CN_ERROR = 8
    CRC_ERROR = 9
    UNKNOWN = 100


# Flag = V5..V0 D A: bit 0 A (answer wanted), bit 1 D (PNUM/PNO present), bits 2-7 version
# (000001 = HJ 212-2017). So Flag=5 is "2017, answer wanted" and Flag=4 is "2017, no answer".
FLAG_A: Final = 0b01
FLAG_D: Final = 0b10
VERSION_SHIFT: Final = 2
VERSION_2017: Final = 1

# Standard codes (HJ 212-2017 appendix). Older Tianjin-style names (PM10, PM25, TSP,
# Voice, ...) and other vendors' names are per kind in citywatch/kinds.yaml (`hj212_codes`),
# and per device in the registry (`hj212_aliases`).
_CODES: Final[dict[str, str]] = {
    "a34001": "tsp", "a34002": "pm10", "a34004": "pm25", "LA": "noise",
    "a01001": "temperature", "a01002": "humidity", "a01006": "pressure",
    "a01007": "wind_speed", "a01008": "wind_dir",
}
CODES: Final[Mapping[str, str]] = MappingProxyType(_CODES)

# Canonical field → the standard code, for encoders and simulators.
FIELD_CODES: Final[Mapping[str, str]] = MappingProxyType(
    {field: code for code, field in _CODES.items() if code[0].islower() or code == "LA"})

# Fields the per-device `hj212_scale` multiplies (vendors differ in µg/m³ vs mg/m³ vs ×1000).
PARTICULATES: Final = frozenset({"tsp", "pm10", "pm25"})

# The data flags that count as valid (an absent flag is valid too); every flag an HJ 212
# monitor sends is kept in Reading.quality and stored as `<field>_flag`.
VALID_FLAGS: Final = MODEL_VALID_FLAGS
# D (fault) and F (stopped): the monitor says the sensor is broken; an event for the rules.
FAULT_FLAGS: Final = frozenset({"D", "F"})

# CN → the `period` tag of the aggregate measurement `<kind>_agg` (README "Aggregates").
PERIODS: Final[Mapping[int, str]] = MappingProxyType({2051: "minute", 2061: "hour", 2031: "day"})
