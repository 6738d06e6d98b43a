"""What every part of the benchmark shares: the checkout's root, the fleet and probe
constants, the run plans of `--quick` and the full run, progress lines, rounding."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

# The checkout: subprocesses run from here (`python -m app.cli run`, the baseline).
ROOT = Path(__file__).resolve().parents[2]

COUNT_FIELDS = {"dust": "pm10", "heating": "primary_supply_temp", "water": "turbidity"}
SCENARIO = "normal-day"
SITES = 200                 # capacity fleet: 140 dust (10 s), 40 heating + 20 water (60 s)
PROBE_SITE = "SBENCH"
ALERT_RULE = "heating_leak"  # fires on one reading (leak_detected is true), no `for`, no window
QUICK = {"readings": 50_000, "repeats": 1, "live_s": 10.0, "rate": 5000.0, "scaling": (), "hj212": (200, 5),
         "hj212_dialects": ("2017", "2005", "tianjin", "no-crlf")}
FULL = {"readings": 200_000, "repeats": 3, "live_s": 60.0, "rate": 5000.0,
        "scaling": ((1_000, 100_000), (10_000, 100_000), (100_000, 100_000)), "hj212": (1_000, 20),
        "hj212_dialects": ("2017", "2025", "2005", "tianjin", "no-crlf", "len+6", "split")}
_T0 = time.monotonic()


def progress(msg: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def rounded(v: float | None, nd: int) -> float | None:
    return None if v is None else round(v, nd) if nd else round(v)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))], 1)


def local_iso(dt: datetime) -> str:
    return dt.astimezone(timezone(timedelta(hours=8))).isoformat(timespec="seconds")
