"""Fixtures for the API tests: a real InfluxDB (session `influx` fixture, one database per
test), an Ingest built by `build_ingest(mqtt=False)` on a temp data dir, an AlertEngine in
event-time mode, and the app — through Starlette's TestClient or a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

TZ = ZoneInfo("Asia/Shanghai")
# The scenarios are replayed on yesterday's local date, not on the date in their files:
# then their data is whole and in the past, inside the API's 7-day "latest" lookback and
# the dashboard's 24-hour charts, on whatever day the suite runs.
_TODAY = datetime.now(TZ).date()
SCENARIO_DAY = (_TODAY - timedelta(days=1)).isoformat()
NEXT_DAY = _TODAY.isoformat()  # the day after SCENARIO_DAY

TOKENS = {"viewer": "viewer-token-0001", "operator": "operator-token-0002", "admin": "admin-token-0003"}
TOKEN_ENV = "viewer-token-0001=viewer, operator-token-0002=operator:王工, admin-token-0003=admin"


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


@dataclass
class Stack:
    settings: Any
    ingest: Any
    engine: Any
    app: Any
    influx_url: str
    database: str
    queries: list[str]

    def write_lines(self, lines) -> None:
        body = "\n".join(lines).encode()
        r = httpx.post(f"{self.influx_url}/write", params={"db": self.database, "precision": "ms"}, content=body)
        assert r.status_code == 204, r.text


@pytest.fixture
def stack(influx, tmp_path: Path):
    from alerts import AlertEngine, EngineConfig, load_rules
    from api.app import create_app
    from citywatch.settings import Settings
    from ingest.service import build_ingest

    db = f"api_{uuid.uuid4().hex[:12]}"
    settings = Settings(data_dir=tmp_path / "data", influx_url=influx.url, influx_database=db,
                        api_tokens=SecretStr(TOKEN_ENV), log_format="text")
    httpx.post(f"{influx.url}/query", data={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
    ingest = build_ingest(settings, mqtt=False)
    queries: list[str] = []
    real_query = ingest.influx.query

    async def spy(text, *, params=None):  # every InfluxQL statement that reaches InfluxDB
        queries.append(text)
        return await real_query(text, params=params)

    ingest.influx.query = spy
    config = EngineConfig.from_settings(settings, state_path=tmp_path / "alerts.sqlite3", time_mode="event")
    engine = AlertEngine(config, rules=load_rules(), notifiers=[])
    app = create_app(settings=settings, ingest=ingest, engine=engine)
    yield Stack(settings, ingest, engine, app, influx.url, db, queries)
    engine.close()
    ingest.close()


@pytest.fixture
def client(stack):
    from starlette.testclient import TestClient

    with TestClient(stack.app) as c:  # one event loop for the whole test (the Influx client's pool)
        yield c


class Server:
    """The app under uvicorn on an ephemeral port, in a thread with its own event loop."""

    def __init__(self, app) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False,
                                     lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(self.config)
        self.server.capture_signals = contextlib.nullcontext
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.app = app

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.app.state.shutdown_streams()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def server(stack):
    with Server(stack.app) as s:
        yield s


# -- data ----------------------------------------------------------------------------------
def decode_scenario(name: str, *, sites: int = 1, seed: int = 1):
    """The scenario's healthy messages through the real decoder → (readings, events, lines)."""
    from citywatch.model import RawMessage
    from ingest.decode import Decoder
    from ingest.types import Accepted
    from simulators import generate

    from simulators.scenario import load_scenario

    decoder = Decoder(clock=lambda: 4_102_444_800_000)  # 2100: never "in the future"
    start = f"{SCENARIO_DAY}T{load_scenario(name).start_dt().strftime('%H:%M:%S')}"
    readings, events, lines = [], [], []
    for m in generate(name, sites=sites, seed=seed, start=start):
        if m.fault is not None:
            continue
        out = decoder.decode(RawMessage(m.topic, m.payload, m.sim_ts_ms))
        if isinstance(out, Accepted):
            readings.extend(out.readings)
            events.extend(out.events)
            lines.extend(out.lines)
    return readings, events, lines


def feed(engine, readings, events=(), chunk: int = 200) -> None:
    """Like group commits: chunks in time order, then a timer tick."""
    items = sorted([*readings, *events], key=lambda x: x.ts_ms)
    from citywatch.model import Reading

    for i in range(0, len(items), chunk):
        part = items[i:i + chunk]
        engine.process_readings([x for x in part if isinstance(x, Reading)],
                                [x for x in part if not isinstance(x, Reading)])
    engine.tick()


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


def episode_until(minute: str = "10:45"):
    """The dust-episode scenario's readings up to a local time on its day (SCENARIO_DAY): the
    PM10 alert is firing (not yet resolved) at the end."""
    readings, events, lines = decode_scenario("dust-episode")
    cut = int(datetime.fromisoformat(f"{SCENARIO_DAY}T{minute}:00").replace(tzinfo=TZ).timestamp() * 1000)
    return ([r for r in readings if r.ts_ms < cut], [e for e in events if e.ts_ms < cut],
            lines)
