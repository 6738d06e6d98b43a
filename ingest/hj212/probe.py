"""Measure how a gateway answers a password guesser (docs, tests and `python -m`).

`guess_rate` plays the attacker of ingest/hj212/README.md "On a hostile network": a few
connections from one address send uploads for one MN with a new wrong password each
time, as fast as the gateway answers, for a bounded time. What it counts is what the
attacker learns: every `CN=9011` answer is one password ruled out.

    python -m ingest.hj212.probe 127.0.0.1:9212 MN [--seconds 5] [--connections 8]

Only for your own gateway on 127.0.0.1 / a test network.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from ingest.hj212.framing import Frame, FrameDecoder, encode_frame
from ingest.hj212.packet import read_header


@dataclass(slots=True)
class GuessResult:
    sent: int = 0  # frames written
    refusals: int = 0  # CN=9011 answers: passwords ruled out
    other_answers: int = 0  # any other answer (9014 would mean a guess was right)
    unanswered: int = 0  # no answer within the timeout
    closed: int = 0  # the gateway closed the connection instead of answering
    refused_connections: int = 0  # connections closed (or refused) before a frame got through
    elapsed_s: float = 0.0

    @property
    def guesses_per_s(self) -> float:
        return self.refusals / self.elapsed_s if self.elapsed_s else 0.0


def guess_frame(mn: str, pw: str, n: int, *, tz: str = "Asia/Shanghai") -> bytes:
    stamp = datetime.now(ZoneInfo(tz)).strftime("%Y%m%d%H%M%S")
    data = (f"QN={stamp}{n % 1000:03d};ST=39;CN=2011;PW={pw};MN={mn};Flag=5;"
            f"CP=&&DataTime={stamp};a34002-Rtd=50.0,a34002-Flag=N&&")
    return encode_frame(data)


async def _read_frame(reader: asyncio.StreamReader, decoder: FrameDecoder) -> Frame | None:
    """The next answer frame, or None at EOF."""
    while True:
        chunk = await reader.read(4096)
        if not chunk:
            return None
        for item in decoder.feed(chunk):
            if isinstance(item, Frame):
                return item


async def guess_rate(host: str, port: int, *, mn: str, seconds: float = 5.0, connections: int = 8,
                     answer_timeout_s: float = 2.0, source: str | None = None,
                     max_guesses: int | None = None) -> GuessResult:
    """Guess for `seconds` (bounded: also stops after `max_guesses` frames). `source`
    binds the client sockets to that local address (e.g. 127.0.0.2)."""
    result = GuessResult()
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()

    def more() -> bool:
        return time.monotonic() < deadline and (max_guesses is None or result.sent < max_guesses)

    async def worker(w: int) -> None:
        n = 0
        while more():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    host, port, local_addr=(source, 0) if source else None), answer_timeout_s)
            except (OSError, TimeoutError):
                result.refused_connections += 1
                await asyncio.sleep(0.01)
                continue
            decoder = FrameDecoder()
            first = True
            try:
                while more():
                    n += 1
                    writer.write(guess_frame(mn, f"g{w:02d}{n:08d}", n))
                    result.sent += 1
                    try:
                        frame = await asyncio.wait_for(_read_frame(reader, decoder),
                                                       min(answer_timeout_s, max(deadline - time.monotonic(), 0.01)))
                    except TimeoutError:
                        result.unanswered += 1
                        break
                    if frame is None:
                        if first:
                            result.refused_connections += 1
                        else:
                            result.closed += 1
                        break
                    first = False
                    if read_header(frame.data).get("CN") == "9011":
                        result.refusals += 1
                    else:
                        result.other_answers += 1
            except OSError:
                result.closed += 1
            finally:
                writer.close()

    await asyncio.gather(*(worker(w) for w in range(connections)))
    result.elapsed_s = time.monotonic() - t0
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ingest.hj212.probe", description=__doc__.splitlines()[0])
    p.add_argument("address", help="HOST:PORT of the gateway")
    p.add_argument("mn", help="the MN to guess passwords for")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=8)
    args = p.parse_args(argv)
    host, _, port = args.address.rpartition(":")
    res = asyncio.run(guess_rate(host, int(port), mn=args.mn, seconds=min(args.seconds, 60.0),
                                 connections=min(args.connections, 256)))
    print({**asdict(res), "guesses_per_s": round(res.guesses_per_s, 1)})
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
