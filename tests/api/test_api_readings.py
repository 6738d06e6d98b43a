"""Latest readings and series: real InfluxDB; identifiers validated before any query."""

from __future__ import annotations

import pytest
from conftest import NEXT_DAY, SCENARIO_DAY, TZ, auth, decode_scenario

V = auth("viewer")


def at(hhmm: str, day: str = SCENARIO_DAY) -> str:
    """A local time on the day the scenarios are replayed on (see conftest.SCENARIO_DAY)."""
    return f"{day}T{hhmm}:00+08:00"


EP = at("10:00")  # the dust episode is 10:30-10:45


@pytest.fixture
def loaded(stack):
    _, _, lines = decode_scenario("dust-episode", sites=2)
    stack.write_lines(lines)
    return stack


def test_latest(client, loaded):
    items = client.get("/v1/readings/latest", params={"kind": "dust"}, headers=V).json()["items"]
    assert [(i["site"], i["device"]) for i in items] == [("S0001", "D00001"), ("S0002", "D00002")]
    one = items[0]
    assert one["time"].endswith("+08:00") and one["values"]["pm10"] > 0 and isinstance(one["values"]["spray_on"], bool)
    only = client.get("/v1/readings/latest", params={"site": "S0002"}, headers=V).json()["items"]
    assert [i["device"] for i in only] == ["D00002"]
    assert client.get("/v1/readings/latest", params={"site": "S9999"}, headers=V).json()["items"] == []


def test_series_downsampled(client, loaded):
    r = client.get("/v1/series", headers=V, params={"kind": "dust", "site": "S0001", "field": "pm10", "start": EP,
                                                    "end": at("11:00"), "every": "10m", "agg": "max"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["unit"] == "µg/m³" and doc["every"] == "10m" and doc["start"] == EP
    (s,) = doc["series"]
    assert s["device"] == "D00001" and len(s["points"]) == 6
    assert max(v for _, v in s["points"]) > 150  # the episode at 10:30
    # default range is the last 24 h and every is chosen automatically (bounded points)
    auto = client.get("/v1/series", headers=V, params={"kind": "dust", "field": "noise", "end": f"{SCENARIO_DAY}T14:00:00Z"})
    assert auto.status_code == 200 and auto.json()["every"] == "5m"
    assert all(len(s["points"]) <= 720 for s in auto.json()["series"])
    b = client.get("/v1/series", headers=V, params={"kind": "dust", "field": "spray_on", "agg": "last", "start": EP,
                                                    "end": at("10:10"), "every": "1m"})
    assert b.status_code == 200 and isinstance(b.json()["series"][0]["points"][0][1], bool)


INJECTIONS = [
    "S0001' OR 1=1 --", 'S0001"', "S0001; DROP DATABASE x", "S0001\nSELECT", "S0001\r\n", "S.*", "S0001|S0002",
    "/S0001/", "S0001\\", "$site", "S 1", "", "x" * 65, "站点", "S0001\x00", "S0001)", "S0001'; SHOW DATABASES",
]


@pytest.mark.parametrize("param", ["site", "device", "field", "kind"])
@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_rejected_before_influx(client, stack, param, value):
    params = {"kind": "dust", "field": "pm10", "site": "S0001", "device": "D00001", param: value}
    before = len(stack.queries)
    r = client.get("/v1/series", params=params, headers=V)
    assert r.status_code == 422, r.text
    assert len(stack.queries) == before  # nothing reached InfluxDB
    if param in ("site", "kind"):
        r = client.get("/v1/readings/latest", params={param: value}, headers=V)
        assert r.status_code == 422 and len(stack.queries) == before
    assert value not in r.text or value == ""  # the offending value is not echoed


@pytest.mark.parametrize("params,where", [
    ({"kind": "gas"}, "kind"),                                   # unknown kind
    ({"field": "turbidity"}, "field"),                           # a field of another kind
    ({"agg": "median"}, "agg"),
    ({"field": "spray_on", "agg": "mean"}, "agg"),              # bool: last only
    ({"start": "2026-10-01T00:00:00+08:00", "end": "2026-11-27T00:00:00+08:00"}, "start"),  # > 31 days
    ({"start": EP, "end": at("20:00"), "every": "10s"}, "every"),  # 4320 ok? no: see below
    ({"start": "2026-11-01T00:00:00+08:00", "end": "2026-11-27T00:00:00+08:00", "every": "1m"}, "every"),  # 37440 pts
    ({"start": "2026-11-27T10:00:00", "end": "2026-11-27T11:00:00+08:00"}, "start"),   # no offset
    ({"start": "1795744800000"}, "start"),                       # epoch: not RFC 3339
    ({"start": "2026-11-27T25:00:00+08:00"}, "start"),
    ({"start": at("11:00"), "end": EP}, "start"),  # reversed
    ({"every": "1x"}, "every"), ({"every": "5s"}, "every"), ({"every": "0m"}, "every"), ({"every": "1m;"}, "every"),
])
def test_series_limits(client, stack, params, where):
    base = {"kind": "dust", "field": "pm10", "start": EP, "end": at("11:00")}
    if params.get("every") == "10s" and "20:00" in params.get("end", ""):
        params = {**params, "end": at("10:00", NEXT_DAY)}  # 24 h / 10 s = 8640 > 5000
    r = client.get("/v1/series", params={**base, **params}, headers=V)
    assert r.status_code == 422, r.text
    assert any(where in d["loc"] for d in r.json()["detail"]), r.json()
    assert stack.queries == []


def test_influx_down_is_503_without_detail(client, stack, monkeypatch):
    from citywatch.errors import InfluxError

    async def broken(text, *, params=None):
        raise InfluxError("InfluxDB query failed: ConnectError http://secret-host:8086")

    monkeypatch.setattr(stack.ingest.influx, "query", broken)
    r = client.get("/v1/readings/latest", headers=V)
    assert r.status_code == 503 and "secret-host" not in r.text


def test_series_and_latest_carry_the_hj212_flags(client, stack):
    """Flagged values (stored as `<field>_flag`, as the HJ 212 decoder writes them) come
    through: `flags` lists the buckets holding a value flagged other than N/S, with its flag;
    N-flagged and unflagged (MQTT) values are not listed."""
    from datetime import datetime

    t0 = int(datetime.fromisoformat(f"{SCENARIO_DAY}T10:00:00").replace(tzinfo=TZ).timestamp() * 1000)
    lines = []
    for i in range(60):
        t = t0 + i * 60_000 + 5000
        if 20 <= i < 30:
            extra = ',pm10_flag="D"'          # a fault: 10:20-10:29
        elif i == 40:
            extra = ',pm10_flag="C"'          # calibration at 10:40
        elif i % 2:
            extra = ',pm10_flag="N"'          # HJ 212 normal
        else:
            extra = ""                        # MQTT: no flag = valid
        pm10 = 900 if 20 <= i < 30 or i == 40 else 80  # what a faulty or calibrating monitor may send
        lines.append(f"dust,site=S1,device=D1 pm10={pm10}{extra},noise=55 {t}")
    lines.append(f'dust,site=S1,device=D1 pm10=950,pm10_flag="T",noise=56 {t0 + 60 * 60_000 + 5000}')  # 11:00, newest
    stack.write_lines(lines)
    q = {"kind": "dust", "site": "S1", "field": "pm10", "start": at("10:00"), "end": at("11:00"), "agg": "max"}
    (s,) = client.get("/v1/series", headers=V, params={**q, "every": "1m"}).json()["series"]
    flagged = {(t - t0) // 60_000: f for t, f in s["flags"]}
    assert flagged == {**{m: "D" for m in range(20, 30)}, 40: "C"}
    assert {(t - t0) // 60_000: v for t, v in s["points"] if v > 100} == {m: 900 for m in flagged}  # the values stay
    (s10,) = client.get("/v1/series", headers=V, params={**q, "every": "10m"}).json()["series"]
    assert [((t - t0) // 60_000, f) for t, f in s10["flags"]] == [(20, "D"), (40, "C")]
    noise = client.get("/v1/series", headers=V, params={**q, "field": "noise", "every": "10m"}).json()["series"][0]
    assert noise["flags"] == []  # a flag belongs to its own field only
    (latest,) = client.get("/v1/readings/latest", headers=V, params={"site": "S1"}).json()["items"]
    assert latest["values"]["pm10"] == 950 and latest["flags"] == {"pm10": "T"}
