"""Tokens limited to districts (issue #14 item 4) against the real service: uvicorn on a
port, a real InfluxDB with a dust episode at two sites in two districts, a real alert
engine and dead-letter store. Four dust sites: S0001 and S0003 are in xiaodian (小店区),
S0002 and S0004 in yingze (迎泽区); the episode fires PM10 alerts at S0001 and S0002.

One table names every /v1 route with what a district token must get from it; a test
fails when a /v1 route is missing from the table or does not take the `Scope` dependency,
so a new route cannot forget the districts."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from conftest import SCENARIO_DAY, TZ, Server, Stack, decode_scenario, feed
from pydantic import SecretStr

XIAODIAN = {"S0001", "S0003"}
YINGZE = {"S0002", "S0004"}
ALL_SITES = XIAODIAN | YINGZE
MN3 = "4A4300000000000000D00003"

TOKENS = {
    "viewer": "viewer-token-0001", "operator": "operator-token-0002", "admin": "admin-token-0003",
    "xd_viewer": "xiaodian-view-0004", "yz_operator": "yingze-oper-0005", "xd_admin": "xiaodian-admin-0006",
}
TOKEN_ENV = ", ".join([
    "viewer-token-0001=viewer", "operator-token-0002=operator:王工", "admin-token-0003=admin",
    "xiaodian-view-0004=viewer:xiaodian", "yingze-oper-0005=operator:迎泽值班:yingze",
    "xiaodian-admin-0006=admin:xiaodian"])

REGISTRY = f"""
[[device]]
id = "D00001"
site = "S0001"
kind = "dust"
district = "xiaodian"

[[device]]
id = "D00002"
site = "S0002"
kind = "dust"
district = "yingze"

[[device]]
id = "D00003"
site = "S0003"
kind = "dust"
district = "xiaodian"
hj212_mn = "{MN3}"
hj212_pw = "pw-000003"

[[device]]
id = "D00004"
site = "S0004"
kind = "dust"
district = "yingze"
"""

# dust-episode at the first two of four dust sites, cut short: 09:00-11:00 local
SCENARIO = """
name: district-episode
description: PM10 above 150 with the spray off at S0001 and S0002 from 10:00 for 15 min.
start: "2026-11-27T09:00:00"
duration: 2h
fleet:
  mix: {dust: 1.0}
intervals_s: {dust: 10}
episodes:
  - type: dust_episode
    at: "10:00"
    duration: 15m
    target: {kind: dust, sites: [S0001, S0002]}
    params: {level: 230, floor: 170}
"""


def h(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def _ms(hhmm: str) -> int:
    return int(datetime.fromisoformat(f"{SCENARIO_DAY}T{hhmm}:00").replace(tzinfo=TZ).timestamp() * 1000)


@pytest.fixture
def dstack(influx, tmp_path: Path):
    """Like conftest's `stack`, with a registry of two districts and district tokens."""
    from alerts import AlertEngine, EngineConfig, load_rules
    from api.app import create_app
    from app.preflight import preflight
    from citywatch.settings import Settings
    from ingest.service import build_ingest

    devices = tmp_path / "devices.toml"
    devices.write_text(REGISTRY, "utf-8")
    db = f"api_{uuid.uuid4().hex[:12]}"
    settings = Settings(data_dir=tmp_path / "data", influx_url=influx.url, influx_database=db,
                        api_tokens=SecretStr(TOKEN_ENV), devices_file=devices, log_format="text")
    preflight(settings)  # the district tokens are valid against this registry
    httpx.post(f"{influx.url}/query", data={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
    ingest = build_ingest(settings, mqtt=False)
    queries: list[str] = []
    real_query = ingest.influx.query

    async def spy(text, *, params=None):
        queries.append(text)
        return await real_query(text, params=params)

    ingest.influx.query = spy
    config = EngineConfig.from_settings(settings, state_path=tmp_path / "alerts.sqlite3", time_mode="event")
    engine = AlertEngine(config, rules=load_rules(), notifiers=[])
    app = create_app(settings=settings, ingest=ingest, engine=engine)
    scenario = tmp_path / "district-episode.yaml"
    scenario.write_text(SCENARIO, "utf-8")
    readings, events, lines = decode_scenario(scenario, sites=4)
    stack = Stack(settings, ingest, engine, app, influx.url, db, queries)
    stack.write_lines(lines)
    cut = _ms("10:20")  # the alerts are firing, not yet resolved
    stack.episode = ([r for r in readings if r.ts_ms < cut], [e for e in events if e.ts_ms < cut])
    yield stack
    engine.close()
    ingest.close()


@pytest.fixture
def dserver(dstack):
    with Server(dstack.app) as s:
        yield s


def _dead_letters(stack) -> None:
    from citywatch.model import RawMessage

    t = _ms("10:00")
    stack.ingest.deadletters.add_many([
        (RawMessage("telemetry/dust/S0001/D00001", b'{"pm10": "x"}', t, "mqtt"), ["bad_value"]),
        (RawMessage("telemetry/dust/S0002/D00002", b'{"pm10": "y"}', t, "mqtt"), ["bad_value"]),
        (RawMessage(f"hj212/{MN3}", b"##0000QN=1;MN=" + MN3.encode() + b";PW=pw-000003", t, "hj212"), ["crc"]),
        (RawMessage("influx/write", b"dust,device=D00004,site=S0004 pm10=1 1", t, "influx"), ["influx_rejected"]),
        (RawMessage("hj212/127.0.0.1:40000", b"garbage", t, "hj212"), ["not_a_frame"]),
    ])


def _firing(c, who="viewer") -> dict[str, str]:
    """site → id of its firing PM10 alert (as the unlimited viewer sees them)."""
    items = c.get("/v1/alerts?state=firing&rule=dust_pm10_10min", headers=h(who)).json()["items"]
    return {a["site"]: a["id"] for a in items}


# -- the table: every /v1 route, what a district-limited token gets -------------------------
SERIES = (f"/v1/series?kind=dust&field=pm10&every=1m&start={SCENARIO_DAY}T09:00:00%2B08:00"
          f"&end={SCENARIO_DAY}T11:00:00%2B08:00")


def case_me(c, ids):
    assert c.get("/v1/me", headers=h("xd_viewer")).json()["districts"] == ["xiaodian"]
    assert c.get("/v1/me", headers=h("viewer")).json()["districts"] is None


def case_latest(c, ids):
    def sites(who, q=""):
        r = c.get("/v1/readings/latest" + q, headers=h(who))
        assert r.status_code == 200, r.text
        return {x["site"] for x in r.json()["items"]}

    assert sites("viewer") == ALL_SITES  # the data is there ...
    assert sites("xd_viewer") == XIAODIAN  # ... and the district token sees its part
    assert sites("xd_viewer", "?site=S0003&kind=dust") == {"S0003"}
    assert c.get("/v1/readings/latest?site=S0002", headers=h("xd_viewer")).status_code == 403


def case_series(c, ids):
    def sites(who, q=""):
        r = c.get(SERIES + q, headers=h(who))
        assert r.status_code == 200, r.text
        return {x["site"] for x in r.json()["series"]}

    assert sites("viewer") == ALL_SITES
    assert sites("xd_viewer") == XIAODIAN
    assert sites("xd_viewer", "&device=D00002") == set()  # a device outside narrows to nothing
    assert c.get(SERIES + "&site=S0004", headers=h("xd_viewer")).status_code == 403


def case_alerts(c, ids):
    every = {a["site"] for a in c.get("/v1/alerts", headers=h("viewer")).json()["items"]}
    mine = {a["site"] for a in c.get("/v1/alerts", headers=h("xd_viewer")).json()["items"]}
    assert {"S0001", "S0002"} <= every
    assert "S0001" in mine and mine <= XIAODIAN
    assert c.get("/v1/alerts?site=S0002", headers=h("xd_viewer")).status_code == 403
    assert c.get("/v1/alerts?site=S0001", headers=h("xd_viewer")).json()["items"]


def case_alert(c, ids):
    assert c.get(f"/v1/alerts/{ids['S0001']}", headers=h("xd_viewer")).json()["site"] == "S0001"
    r = c.get(f"/v1/alerts/{ids['S0002']}", headers=h("xd_viewer"))
    assert r.status_code == 403 and "S0002" not in r.text


def case_ack(c, ids):
    r = c.post(f"/v1/alerts/{ids['S0001']}/ack", headers=h("yz_operator"), json={"note": "不是我们区"})
    assert r.status_code == 403
    assert c.get(f"/v1/alerts/{ids['S0001']}", headers=h("viewer")).json()["acked"] is False  # nothing changed
    r = c.post(f"/v1/alerts/{ids['S0002']}/ack", headers=h("yz_operator"), json={"note": "已派人"})
    assert r.status_code == 200 and r.json()["acked_by"] == "迎泽值班"


def case_stream(c, ids):
    # the events themselves: test_district_stream_carries_only_its_sites
    assert c.get("/v1/alerts/stream?site=S0002", headers=h("xd_viewer")).status_code == 403


def case_rules(c, ids):
    assert c.get("/v1/rules", headers=h("xd_viewer")).json() == c.get("/v1/rules", headers=h("viewer")).json()


def case_rule(c, ids):
    assert c.get("/v1/rules/dust_pm10_10min", headers=h("xd_viewer")).json()["id"] == "dust_pm10_10min"


def case_put_rule(c, ids):
    rule = c.get("/v1/rules/dust_pm10_10min", headers=h("admin")).json()
    r = c.put("/v1/rules/dust_pm10_10min", headers=h("xd_admin"), json={**rule, "severity": "info"})
    assert r.status_code == 403  # rules hold for every district
    assert c.get("/v1/rules/dust_pm10_10min", headers=h("admin")).json()["severity"] == rule["severity"]


def case_compliance(c, ids):
    q = f"/v1/compliance/six100?date={SCENARIO_DAY}"
    assert {s["site"] for s in c.get(q, headers=h("viewer")).json()["sites"]} == ALL_SITES
    assert [s["site"] for s in c.get(q, headers=h("xd_viewer")).json()["sites"]] == sorted(XIAODIAN)
    csv = c.get(q + "&format=csv", headers=h("xd_viewer"))
    assert csv.status_code == 200
    assert {line.split(",")[1] for line in csv.text.lstrip("\ufeff").splitlines()[1:]} == XIAODIAN
    assert c.get(q + "&site=S0002", headers=h("xd_viewer")).status_code == 403


def case_compliance_month(c, ids):
    q = f"/v1/compliance/six100/month?month={SCENARIO_DAY[:7]}"
    assert {s["site"] for s in c.get(q, headers=h("viewer")).json()["sites"]} == ALL_SITES
    mine = c.get(q, headers=h("xd_viewer")).json()
    assert [s["site"] for s in mine["sites"]] == sorted(XIAODIAN)
    assert SCENARIO_DAY in mine["days"]
    assert c.get(q + "&site=S0002", headers=h("xd_viewer")).status_code == 403


def case_compliance_xlsx(c, ids):
    import io
    import re

    import openpyxl

    q = f"/v1/compliance/six100.xlsx?date={SCENARIO_DAY}"

    def sites_in(body: bytes) -> set[str]:
        book = openpyxl.load_workbook(io.BytesIO(body))
        return {str(v) for ws in book.worksheets for row in ws.iter_rows(values_only=True) for v in row
                if isinstance(v, str) and re.fullmatch(r"S\d{4}", v)}

    assert sites_in(c.get(q, headers=h("viewer")).content) == ALL_SITES
    r = c.get(q, headers=h("xd_viewer"))
    assert r.status_code == 200 and sites_in(r.content) == XIAODIAN
    assert c.get(q + "&site=S0002", headers=h("xd_viewer")).status_code == 403


def case_deadletters(c, ids):
    _dead_letters(c.stack)
    every = c.get("/v1/deadletters", headers=h("operator")).json()
    assert every["total"] == 5
    mine = c.get("/v1/deadletters", headers=h("xd_admin")).json()
    assert mine["total"] == 2 and [d["topic"] for d in mine["items"]] == ["telemetry/dust/S0001/D00001",
                                                                         f"hj212/{MN3}"]
    assert "pw-000003" not in json.dumps(mine)  # still redacted
    theirs = c.get("/v1/deadletters?limit=1&offset=1", headers=h("yz_operator")).json()
    assert theirs["total"] == 2 and [d["topic"] for d in theirs["items"]] == ["influx/write"]


def case_replay(c, ids):
    r = c.post("/v1/deadletters/replay", headers=h("xd_admin"), json={"dry_run": True})
    assert r.status_code == 403
    assert c.post("/v1/deadletters/replay", headers=h("admin"), json={"dry_run": True}).status_code == 200


ROUTES = {
    ("GET", "/v1/me"): case_me,
    ("GET", "/v1/readings/latest"): case_latest,
    ("GET", "/v1/series"): case_series,
    ("GET", "/v1/alerts"): case_alerts,
    ("GET", "/v1/alerts/{alert_id}"): case_alert,
    ("POST", "/v1/alerts/{alert_id}/ack"): case_ack,
    ("GET", "/v1/alerts/stream"): case_stream,
    ("GET", "/v1/rules"): case_rules,
    ("GET", "/v1/rules/{rule_id}"): case_rule,
    ("PUT", "/v1/rules/{rule_id}"): case_put_rule,
    ("GET", "/v1/compliance/six100"): case_compliance,
    ("GET", "/v1/compliance/six100/month"): case_compliance_month,
    ("GET", "/v1/compliance/six100.xlsx"): case_compliance_xlsx,
    ("GET", "/v1/deadletters"): case_deadletters,
    ("POST", "/v1/deadletters/replay"): case_replay,
}


def _v1_routes(app):
    """(method, route) of every /v1 route. FastAPI >= 0.165 includes routers lazily
    (`app.routes` holds the included routers, not their routes): walk it with its own
    `iter_route_contexts` when it has one."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        routes = list(app.routes)
    else:
        routes = list(iter_route_contexts(app.routes))
    for route in routes:
        if (route.path or "").startswith("/v1"):
            for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
                yield method, route


def test_every_v1_route_takes_the_scope_and_is_in_the_table(dstack):
    from api.deps import current_scope

    def calls(dep):
        yield dep.call
        for sub in dep.dependencies:
            yield from calls(sub)

    seen = set()
    for method, route in _v1_routes(dstack.app):
        dependant = getattr(route, "dependant", None) or route.original_route.dependant
        assert current_scope in set(calls(dependant)), f"{method} {route.path} does not take ScopeDep"
        seen.add((method, route.path))
    assert len(seen) >= 13  # the walk found the routes (not an empty app.routes)
    assert seen == set(ROUTES), f"routes without a district case: {seen - set(ROUTES)}"


class _Client(httpx.Client):
    """Remembers which InfluxQL statements each request of a district token caused
    (requests are one at a time, so the statements between its start and end are its)."""

    stack: Stack
    scoped_queries: list[str]

    def request(self, method, url, **kw):
        bearer = (kw.get("headers") or {}).get("Authorization", "")
        before = len(self.stack.queries)
        r = super().request(method, url, **kw)
        if bearer.removeprefix("Bearer ") in (TOKENS["xd_viewer"], TOKENS["yz_operator"], TOKENS["xd_admin"]):
            self.scoped_queries.extend(self.stack.queries[before:])
        return r


@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p}" for m, p in ROUTES])
def test_district_token_sees_only_its_sites(dstack, dserver, route):
    feed(dstack.engine, *dstack.episode)
    with _Client(base_url=dserver.url, timeout=30) as c:
        c.stack, c.scoped_queries = dstack, []
        ids = _firing(c)
        assert {"S0001", "S0002"} <= set(ids), ids  # alerts in both districts
        ROUTES[route](c, ids)
        for text in c.scoped_queries:  # InfluxDB is asked by site, never for everything
            if text.startswith("SHOW FIELD KEYS"):
                continue  # the measurement's schema (which fields exist), no site's data
            assert '"site" = $site' in text, text
        if route[1] in ("/v1/readings/latest", "/v1/series", "/v1/compliance/six100",
                        "/v1/compliance/six100/month", "/v1/compliance/six100.xlsx"):
            assert c.scoped_queries  # (the check above had something to check)
        assert not any(t in r for t in TOKENS.values() for r in dstack.queries)


def _read_stream(url: str, who: str, out: queue.Queue, stop: threading.Event) -> None:
    with httpx.Client(timeout=httpx.Timeout(30, read=60)) as c, \
            c.stream("GET", url + "/v1/alerts/stream", headers=h(who)) as r:
        out.put(("status", r.status_code))
        for line in r.iter_lines():
            if stop.is_set():
                return
            if line.startswith("data:"):
                out.put(("event", json.loads(line[5:])))
            elif line.startswith(": connected"):
                out.put(("connected", None))


def _until_acked(q: queue.Queue, alert_id: str) -> list[dict]:
    got, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline:
        kind, item = q.get(timeout=max(0.1, deadline - time.monotonic()))
        if kind == "event":
            got.append(item)
            if item["event"] == "acked" and item["alert"]["id"] == alert_id:
                return got
    raise AssertionError(f"no ack event within 30 s; got {len(got)} events")


def test_district_stream_carries_only_its_sites(dstack, dserver):
    stop = threading.Event()
    mine, every = queue.Queue(), queue.Queue()
    threads = [threading.Thread(target=_read_stream, args=(dserver.url, who, q, stop), daemon=True)
               for who, q in (("xd_viewer", mine), ("viewer", every))]
    for t in threads:
        t.start()
    try:
        for q in (mine, every):
            assert q.get(timeout=15) == ("status", 200)
            assert q.get(timeout=15) == ("connected", None)
        feed(dstack.engine, *dstack.episode)  # now, live: alerts fire at S0001 and S0002
        ids = _firing(httpx.Client(base_url=dserver.url))
        # the last event of the test, in the xiaodian district: both streams must carry it
        assert httpx.post(f"{dserver.url}/v1/alerts/{ids['S0001']}/ack", headers=h("operator")).status_code == 200
        seen_mine = _until_acked(mine, ids["S0001"])
        seen_every = _until_acked(every, ids["S0001"])
        assert {e["alert"]["site"] for e in seen_every} >= {"S0001", "S0002"}  # there was something to hide
        assert {e["alert"]["site"] for e in seen_mine} <= XIAODIAN
        assert any(e["alert"]["id"] == ids["S0001"] and e["event"] == "firing" for e in seen_mine)
    finally:
        stop.set()
        dstack.app.state.shutdown_streams()
        for t in threads:
            t.join(10)


# -- configuration ----------------------------------------------------------------------------
def test_token_district_forms():
    from api.auth import TokenStore

    known = frozenset({"xiaodian", "yingze"})
    s = TokenStore.parse("tok-00001=viewer:xiaodian|yingze, tok-00002=operator:王工:yingze, tok-00003=admin:ops:,"
                         "tok-00004=viewer:xiaodian, tok-00005=operator:王工, tok-00006=admin", known)
    got = {p.slot: (p.name, p.role.name, p.districts) for p in s.principals}
    assert got == {
        1: ("viewer#1", "viewer", known),
        2: ("王工", "operator", frozenset({"yingze"})),
        3: ("ops", "admin", None),
        4: ("viewer#4", "viewer", frozenset({"xiaodian"})),
        5: ("王工", "operator", None),
        6: ("admin#6", "admin", None),
    }


def test_chinese_district_names_and_the_name_warning(caplog):
    """Districts may be named in Chinese (城区); a single name that is no district keeps its
    old meaning (a display name, every site) but is called out at start-up, so a mistyped
    Chinese district cannot quietly widen a token."""
    from api.auth import TokenStore

    known = frozenset({"城区", "开发区"})
    with caplog.at_level("WARNING", logger="citywatch.api"):
        s = TokenStore.parse("tok-00001=viewer:城区, tok-00002=operator:城西, tok-00003=operator:王工:", known)
    got = {p.slot: (p.name, p.districts) for p in s.principals}
    assert got == {1: ("viewer#1", frozenset({"城区"})), 2: ("城西", None), 3: ("王工", None)}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "'城西'" in warned[0] and "every district" in warned[0]


@pytest.mark.parametrize("entry,known,says", [
    ("viewer:xiaodain", {"xiaodian"}, "'xiaodain' is not a district"),  # a typo never becomes a name
    ("viewer:xiaodian|nowhere", {"xiaodian"}, "district 'nowhere' is not in the device registry"),
    ("viewer:王工:nowhere", {"xiaodian"}, "district 'nowhere' is not in the device registry"),
    ("viewer:a|b", None, "no device registry"),  # districts without a registry that has them
    ("viewer:ops:xiaodian", set(), "no device registry"),
    ("viewer:xiaodian|", {"xiaodian"}, "an empty or malformed name"),
])
def test_token_district_errors_name_the_pair_not_the_token(entry, known, says):
    from api.auth import TokenStore
    from citywatch.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        TokenStore.parse(f"secret-token-1=admin, secret-token-2={entry}",
                         None if known is None else frozenset(known))
    assert "pair #2" in str(exc.value) and says in str(exc.value)
    assert "secret-token" not in str(exc.value)


def test_run_stops_on_an_unknown_district(tmp_path):
    """`citywatch run` preflight: exit 2, one line naming CW_API_TOKENS, no token."""
    import os
    import subprocess
    import sys

    devices = tmp_path / "devices.toml"
    devices.write_text(REGISTRY, "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CW_")}
    env.update({"CW_API_TOKENS": "supersecret-0001=viewer:nowhere|xiaodian", "CW_DEVICES_FILE": str(devices),
                "CW_DATA_DIR": str(tmp_path / "data"), "CW_LOG_FORMAT": "text",
                # unreachable on purpose: nothing may be contacted before the settings are valid
                "CW_MQTT_URL": "mqtt://127.0.0.1:1", "CW_INFLUX_URL": "http://127.0.0.1:2"})
    p = subprocess.run([sys.executable, "-m", "app.cli", "run"], env=env, capture_output=True, text=True,
                       timeout=60, cwd=Path(__file__).resolve().parents[2])  # a bound, not a speed claim
    assert p.returncode == 2, p.stderr
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("citywatch: CW_API_TOKENS") and "'nowhere'" in lines[0], p.stderr
    assert "supersecret" not in p.stderr + p.stdout


def test_registry_needs_one_district_per_site(tmp_path):
    from citywatch.errors import ConfigError
    from citywatch.registry import Registry

    bad = tmp_path / "devices.toml"
    bad.write_text(REGISTRY + '\n[[device]]\nid = "D00005"\nsite = "S0001"\nkind = "noise"\ndistrict = "yingze"\n')
    with pytest.raises(ConfigError, match="S0001.*different districts"):
        Registry.load(bad)
    bad.write_text('[[device]]\nid = "D1"\nsite = "S1"\nkind = "dust"\ndistrict = "小店|区"\n')
    with pytest.raises(ConfigError, match="district must be"):
        Registry.load(bad)
    good = tmp_path / "ok.toml"
    good.write_text(REGISTRY, "utf-8")
    reg = Registry.load(good)
    assert reg.sites_by_district() == {"xiaodian": frozenset(XIAODIAN), "yingze": frozenset(YINGZE)}
    assert reg.get("D00003").district == "xiaodian" and "district" not in reg.get("D00003").params
    # the alert routing (alerts/routing) matches on the same district
    from alerts.routing import labels_from

    assert labels_from(reg)({"site": "S0002", "device": "D00002", "rule": "r"})["district"] == "yingze"




# -- the dashboard ------------------------------------------------------------------------------
def test_dashboard_with_a_district_token_shows_only_its_sites(dstack, dserver, tmp_path):
    """Headless Debian chromium: log in with the xiaodian viewer token; the header names the
    district, and the sites, alerts, chart picker and compliance table hold only S0001/S0003.
    Screenshot: <tmp>/dashboard-xiaodian.png."""
    import os

    from test_api_dashboard_browser import CHROMIUM, _chromium

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    feed(dstack.engine, *dstack.episode)
    assert {a["site"] for a in httpx.get(f"{dserver.url}/v1/alerts", headers=h("viewer")).json()["items"]} \
        >= {"S0001", "S0002"}  # the other district has alerts the page must not show
    with sync_api.sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300}, locale="zh-CN",
                                    timezone_id="Asia/Shanghai")
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(dserver.url + "/")
            page.fill("#token", TOKENS["xd_viewer"])
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("#districts:not([hidden])", timeout=10_000)
            assert page.inner_text("#districts") == "区县: xiaodian"
            page.wait_for_selector("#alerts tbody tr[data-state=firing]", timeout=10_000)
            page.wait_for_selector(".card[data-site=S0003]", timeout=10_000)
            page.fill("#comp-date", SCENARIO_DAY)
            page.wait_for_selector(f"#compliance[data-date='{SCENARIO_DAY}'] tbody tr[data-site]", timeout=20_000)
            page.wait_for_selector("#chart-pm10 .uplot", timeout=10_000)
            shot = tmp_path / "dashboard-xiaodian.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            cards = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.site)")
            alert_sites = page.eval_on_selector_all("#alerts tbody tr", "rs => rs.map(r => r.children[3].textContent)")
            comp_sites = page.eval_on_selector_all("#compliance tbody tr", "rs => rs.map(r => r.dataset.site)")
            chart_sites = page.eval_on_selector_all("#chart-site option", "os => os.map(o => o.value)")
            assert sorted(cards) == sorted(XIAODIAN), cards
            assert "S0001" in alert_sites and set(alert_sites) <= XIAODIAN, alert_sites
            assert sorted(comp_sites) == sorted(XIAODIAN), comp_sites
            assert sorted(chart_sites) == sorted(XIAODIAN), chart_sites
            assert not any(s in page.inner_text("main") for s in YINGZE)
            page.click("#lang")
            assert page.inner_text("#districts") == "districts: xiaodian"
            assert errors == [], errors
        finally:
            browser.close()
