"""Test doubles and a small HJ 212 client, shipped beside the gateway.

- `MemorySink`: the `Sink` protocol in memory; confirms durability from its own thread
  after a short delay, like the real committer.
- `encode_packet`: builds a valid upload frame (what a dust monitor sends).
- `run_fleet`: N monitors over TCP, each sending M packets and awaiting the 9014 answer;
  the base for `citywatch simulate --protocol hj212` and the gateway load tests.
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from citywatch.registry import Device, Registry
from ingest.hj212.codes import Cn
from ingest.hj212.crc import CrcMode, crc_ok
from ingest.hj212.framing import Frame, FrameDecoder, encode_frame
from ingest.hj212.packet import read_header
from ingest.types import Accepted, DurableCallback, Outcome, Rejected


class MemorySink:
    """Collects outcomes; calls `on_durable(ok)` from a background thread after `delay_s`.

    Thread-safe like the real sink. `ok` is `not fail` (set `fail=True` to simulate a
    disk failure). Call `close()` (or use `with`) to stop the thread.
    """

    def __init__(self, *, delay_s: float = 0.002, fail: bool = False) -> None:
        self.delay_s = delay_s
        self.fail = fail
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []
        self._queue: queue.SimpleQueue[tuple[float, DurableCallback | None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._confirm, name="memory-sink", daemon=True)
        self._thread.start()

    def submit(self, outcome: Outcome, on_durable: DurableCallback | None = None) -> None:
        with self._lock:
            self._outcomes.append(outcome)
        self._queue.put((time.monotonic() + self.delay_s, on_durable))

    @property
    def outcomes(self) -> list[Outcome]:
        with self._lock:
            return list(self._outcomes)

    @property
    def accepted(self) -> list[Accepted]:
        return [o for o in self.outcomes if isinstance(o, Accepted)]

    @property
    def rejected(self) -> list[Rejected]:
        return [o for o in self.outcomes if isinstance(o, Rejected)]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def __enter__(self) -> "MemorySink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _confirm(self) -> None:
        # Same delay for every item, so FIFO order is due-time order.
        while (item := self._queue.get()) is not None:
            due, callback = item
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            if callback is not None:
                callback(not self.fail)


def _number(value: float) -> str:
    return format(float(value), ".10g")


def encode_packet(
    *,
    mn: str,
    pw: str,
    data_time: datetime,
    values: Mapping[str, float | tuple[float, float, float]],
    cn: int = Cn.REALTIME,
    st: str = "39",
    flag: int = 5,
    qn: str | None = None,
    flags: Mapping[str, str] | None = None,
    rf: bool = False,
    tz: str = "Asia/Shanghai",
    crc: CrcMode = "strict",
) -> bytes:
    """One upload frame. `values` are keyed by HJ 212 code (`a34002`, `LA`, ...); for
    real-time (2011) a float becomes `-Rtd`; for interval packets a float becomes `-Avg`
    and a (min, avg, max) tuple becomes `-Min/-Avg/-Max`. An aware `data_time` is
    converted to `tz`; a naive one is taken as local time."""
    if data_time.tzinfo is not None:
        data_time = data_time.astimezone(ZoneInfo(tz))
    stamp = data_time.strftime("%Y%m%d%H%M%S")
    items = [f"DataTime={stamp}"]
    for code, value in values.items():
        if isinstance(value, tuple):
            lo, avg, hi = value
            parts = [f"{code}-Min={_number(lo)}", f"{code}-Avg={_number(avg)}", f"{code}-Max={_number(hi)}"]
        else:
            parts = [f"{code}-{'Rtd' if cn == Cn.REALTIME else 'Avg'}={_number(value)}"]
        parts.append(f"{code}-Flag={(flags or {}).get(code, 'N')}")
        items.append(",".join(parts))
    header = [f"QN={qn or stamp + '000'}", f"ST={st}", f"CN={int(cn)}", f"PW={pw}", f"MN={mn}", f"Flag={flag}"]
    if rf:
        header.append("RF=1")
    return encode_frame(";".join(header) + ";CP=&&" + ";".join(items) + "&&", crc=crc)


# The dialects `run_fleet` (and `citywatch simulate --protocol hj212 --dialect`) can speak,
# each as monitors in the field send it (README "Dialects"):
DIALECTS: dict[str, str] = {
    "2017": "HJ 212-2017: QN, Flag=5, standard codes, each packet answered",
    "2025": "HJ 212-2025: as 2017 plus the RF re-send marker (RF=0) and a 17-digit DataTime",
    "2005": "HJ/T 212-2005: no QN, no Flag (so no answer), PNO/PNUM-free, ST=39",
    "tianjin": "Tianjin-style names (PM10 PM25 TSP Voice WD WS TEM) without per-item flags, answered",
    "no-crlf": "2017 frames without CR LF (the gateway settles each by its CRC), answered",
    "len+6": "2017 with the length counting CRC and CR LF, answered",
    "split": "2017 uploads split into 2 packets (Flag=7, PNUM=2), each part answered",
}
_TIANJIN = {"a34001": "TSP", "a34002": "PM10", "a34004": "PM25", "LA": "Voice", "a01001": "TEM",
            "a01007": "WS", "a01008": "WD", "a01002": "RH", "a01006": "PA"}


def dialect_answered(dialect: str) -> bool:
    """Whether packets of `dialect` ask for (and get) an answer."""
    return dialect != "2005"


def dialect_frames(dialect: str, *, mn: str, pw: str, data_time: datetime, values: Mapping[str, float], qn: str,
                   tz: str = "Asia/Shanghai", crc: CrcMode = "strict") -> list[bytes]:
    """The frame(s) of one real-time upload in `dialect` (one frame, two for `split`)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(DIALECTS)}")
    local = data_time.astimezone(ZoneInfo(tz)) if data_time.tzinfo is not None else data_time
    stamp = local.strftime("%Y%m%d%H%M%S")
    if dialect in ("2017", "no-crlf", "len+6"):
        frame = encode_packet(mn=mn, pw=pw, data_time=data_time, values=values, qn=qn, tz=tz, crc=crc)
        if dialect == "no-crlf":
            return [frame[:-2]]
        if dialect == "len+6":
            return [b"##%04d" % (int(frame[2:6]) + 6) + frame[6:]]
        return [frame]
    items = [f"{code}-Rtd={_number(v)},{code}-Flag=N" for code, v in values.items()]
    if dialect == "2025":
        head = f"QN={qn};ST=39;CN=2011;PW={pw};MN={mn};Flag=5;RF=0"
        return [encode_frame(f"{head};CP=&&DataTime={stamp}{qn[-3:]};" + ";".join(items) + "&&", crc=crc)]
    if dialect == "2005":
        return [encode_frame(f"ST=39;CN=2011;PW={pw};MN={mn};CP=&&DataTime={stamp};" + ";".join(items) + "&&",
                             crc=crc)]
    if dialect == "tianjin":
        named = [f"{_TIANJIN[code]}-Rtd={_number(v)}" for code, v in values.items() if code in _TIANJIN]
        return [encode_frame(f"QN={qn};ST=22;CN=2011;PW={pw};MN={mn};Flag=5;CP=&&DataTime={stamp};"
                             + ";".join(named) + ";&&", crc=crc)]
    # split: the items over two packets; only the first carries DataTime.
    half = max(1, len(items) // 2)
    head = f"QN={qn};ST=39;CN=2011;PW={pw};MN={mn};Flag=7;PNUM=2"
    return [encode_frame(f"{head};PNO=1;CP=&&DataTime={stamp};" + ";".join(items[:half]) + "&&", crc=crc),
            encode_frame(f"{head};PNO=2;CP=&&" + ";".join(items[half:]) + "&&", crc=crc)]


def fleet_registry(count: int, *, pw: str = "123456", site_every: int = 1) -> Registry:
    """`count` dust monitors D00001.. with 24-character MNs (one site per `site_every` devices)."""
    devices: dict[str, Device] = {}
    for i in range(1, count + 1):
        dev = Device(id=f"D{i:05d}", site=f"S{(i - 1) // site_every + 1:04d}", kind="dust",
                     hj212_mn=f"4A43{i:020d}", hj212_pw=pw)
        devices[dev.id] = dev
    return Registry(devices, {d.hj212_mn: d for d in devices.values() if d.hj212_mn})


def monitor_values(rng: random.Random) -> dict[str, float]:
    """Plausible real-time values of a construction-site monitor (docs/domain.md §5)."""
    pm10 = rng.uniform(40, 300)
    return {"a34001": round(pm10 * rng.uniform(1.3, 2.5), 1), "a34002": round(pm10, 1),
            "a34004": round(pm10 * rng.uniform(0.3, 0.6), 1), "LA": round(rng.uniform(50, 75), 1),
            "a01001": round(rng.uniform(-5, 35), 1), "a01002": round(rng.uniform(20, 90), 1),
            "a01006": round(rng.uniform(92, 94), 2), "a01007": round(rng.uniform(0, 8), 1),
            "a01008": round(rng.uniform(0, 359), 0)}


@dataclass(slots=True)
class FleetResult:
    sent: int = 0  # readings (uploads) sent; a split upload is one reading in several packets
    answered: int = 0  # uploads whose every packet got CN=9014 echoing the QN, with a valid CRC
    packets: int = 0  # frames written
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


async def read_answer(reader: asyncio.StreamReader, decoder: FrameDecoder, backlog: list[Frame]) -> Frame:
    """The next frame from the gateway; framing errors raise ValueError."""
    while not backlog:
        chunk = await reader.read(4096)
        if not chunk:
            raise ConnectionError("gateway closed the connection")
        for item in decoder.feed(chunk):
            if not isinstance(item, Frame):
                raise ValueError(f"bad answer frame: {item.reason}")
            backlog.append(item)
    return backlog.pop(0)


async def run_fleet(
    host: str,
    port: int,
    *,
    monitors: int,
    packets_each: int,
    registry: Registry,
    start: datetime | None = None,
    interval_s: float = 30.0,
    tz: str = "Asia/Shanghai",
    connect_concurrency: int = 200,
    answer_timeout_s: float = 30.0,
    seed: int = 212,
    dialect: str = "2017",
) -> FleetResult:
    """Open `monitors` connections at once; each sends `packets_each` real-time uploads in
    `dialect` (DIALECTS) one after another and awaits the 9014 answer echoing each QN
    (dialects that want no answer — 2005 — send all, then close the connection politely)."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; known: {', '.join(DIALECTS)}")
    answered = dialect_answered(dialect)
    devices = [d for d in registry.devices.values() if d.hj212_mn][:monitors]
    if len(devices) < monitors:
        raise ValueError(f"registry has {len(devices)} HJ 212 devices, {monitors} requested")
    first = start or datetime.now(ZoneInfo(tz)).replace(microsecond=0) - timedelta(seconds=interval_s * packets_each)
    result = FleetResult()
    gate = asyncio.Semaphore(connect_concurrency)  # connect storms overflow the listen backlog
    t0 = time.monotonic()

    async def monitor(index: int, device: Device) -> None:
        rng = random.Random(seed * 100003 + index)
        try:
            async with gate:
                reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            result.errors.append(f"{device.id}: connect: {exc}")
            return
        decoder = FrameDecoder()
        backlog: list[Frame] = []
        try:
            for n in range(packets_each):
                ts = first + timedelta(seconds=interval_s * n)
                qn = ts.astimezone(ZoneInfo(tz)).strftime("%Y%m%d%H%M%S") + f"{n % 1000:03d}"
                frames = dialect_frames(dialect, mn=device.hj212_mn or "", pw=device.hj212_pw or "", data_time=ts,
                                        values=monitor_values(rng), qn=qn, tz=tz, crc=device.hj212_crc)
                result.sent += 1
                ok = True
                for frame in frames:
                    writer.write(frame)
                    result.packets += 1
                    if not answered:
                        continue
                    answer = await asyncio.wait_for(read_answer(reader, decoder, backlog), answer_timeout_s)
                    h = read_header(answer.data)
                    if not crc_ok(answer.data, answer.crc, device.hj212_crc):
                        result.errors.append(f"{device.id}: answer CRC {answer.crc} is wrong")
                        ok = False
                    elif h.get("CN") != str(int(Cn.DATA_ANSWER)) or h.qn != qn:
                        result.errors.append(f"{device.id}: unexpected answer {answer.data[:80]!r}")
                        ok = False
                if answered and ok:
                    result.answered += 1
            if not answered:
                await writer.drain()
                writer.write_eof()  # the gateway stores what it got, then closes
                await asyncio.wait_for(reader.read(), answer_timeout_s)
        except (OSError, ValueError, TimeoutError) as exc:
            result.errors.append(f"{device.id}: {type(exc).__name__}: {exc}")
        finally:
            writer.close()

    await asyncio.gather(*(monitor(i, d) for i, d in enumerate(devices)))
    result.elapsed_s = time.monotonic() - t0
    return result
