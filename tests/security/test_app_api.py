"""The API of a real `citywatch run` (real mosquitto and InfluxDB) under abuse: rule
template abuse is a 422 with the reason, CSV cells that a spreadsheet would run as
formulas are neutralised, 2,000 half-sent requests and a pile of SSE streams on one token
do not take the API down, and the service's log never shows the userinfo of its URLs.
All traffic goes to 127.0.0.1 and is bounded in count and time."""

from __future__ import annotations

import csv
import io
import socket
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.security.app_helpers import api_service, auth

pytestmark = pytest.mark.integration
TZ = ZoneInfo("Asia/Shanghai")
INFLUX_PASSWORD = "Infl0x-S3cret-pw"
MQTT_PASSWORD = "Br0ker-S3cret-pw"
HOOK_TOKEN = "hook-query-t0ken"
HEADER_TIMEOUT_S = 2
MAX_INCOMPLETE = 50
SSE_PER_TOKEN = 4


@pytest.fixture(scope="module")
def service(broker, influx, tmp_path_factory):
    """One service for the module, with secrets in both URLs and tight HTTP limits."""
    tmp = tmp_path_factory.mktemp("appsec")
    mqtt_url = f"mqtt://citywatch:{MQTT_PASSWORD}@127.0.0.1:{broker.port}"
    influx_url = influx.url.replace("http://", f"http://citywatch:{INFLUX_PASSWORD}@")
    with api_service(tmp, mqtt_url=mqtt_url, influx_url=influx_url,
                     api_header_timeout_s=str(HEADER_TIMEOUT_S), api_max_incomplete_requests=str(MAX_INCOMPLETE),
                     api_sse_per_token=str(SSE_PER_TOKEN), api_max_connections="500",
                     # the receiver is down: the dispatcher logs its failures (never its URL's token)
                     alert_webhook_url=f"http://127.0.0.1:9/hook?token={HOOK_TOKEN}",
                     alert_webhook_secret="w" * 40) as (url, proc, database):
        yield url, proc, database, influx.url


# -- rule templates --------------------------------------------------------------------
@pytest.mark.parametrize("template,reason", [
    ("PM10 {value:>100000000}", "not a simple number format"),   # a 100 MB string on every alert
    ("PM10 {value:{unit}}", "not a simple number format"),        # nested field in a format
    ("PM10 {value.__class__.__mro__}", "unknown placeholder"),    # attribute access
    ("PM10 {value!r}", "conversion"),                            # conversion
    ("PM10 {site:>50}", "only the number fields"),                # format on a text field
    ("PM10 {secret}", "unknown placeholder"),                     # unknown name
    ("PM10 {value:.100f}", "not a simple number format"),         # precision out of bounds
    ("PM10 {value} " + "x" * 1000, "at most 1000"),               # oversized template
])
def test_rule_template_abuse_is_a_422_with_the_reason(service, template, reason):
    url, *_ = service
    rule = httpx.get(f"{url}/v1/rules/dust_pm10_10min", headers=auth("viewer"), timeout=10).json()
    before = rule["message"]
    rule["message"] = {"zh": template, "en": "PM10 {value}"}
    r = httpx.put(f"{url}/v1/rules/dust_pm10_10min", json=rule, headers=auth("admin"), timeout=10)
    assert r.status_code == 422, r.text
    text = " ".join(d["msg"] for d in r.json()["detail"])
    assert reason in text, text
    # nothing changed
    assert httpx.get(f"{url}/v1/rules/dust_pm10_10min", headers=auth("viewer"),
                     timeout=10).json()["message"] == before


def test_simple_number_formats_are_accepted(service):
    url, *_ = service
    rule = httpx.get(f"{url}/v1/rules/dust_pm10_10min", headers=auth("viewer"), timeout=10).json()
    rule["message"] = {"zh": "PM10 {value:.1f} {unit} 超过 {threshold:g}（{count:d} 次），{action}",
                       "en": "PM10 {value:8.2f} {unit} above {limit:,.0f}; {action}"}
    r = httpx.put(f"{url}/v1/rules/dust_pm10_10min", json=rule, headers=auth("admin"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["message"]["zh"].startswith("PM10 {value:.1f}")


def test_template_numbers_render_with_their_format():
    from alerts.rules import template_values

    ctx = template_values({"value": "123.46", "limit": "150", "threshold": "150", "count": "3", "unit": "µg/m³"},
                          {"value": 123.456, "limit": 150.0, "threshold": 150.0, "count": 3})
    assert "{value:.1f}|{value}|{threshold:g}|{count:03d}|{limit:>6.0f}".format_map(ctx) == "123.5|123.46|150|003|   150"
    # a value that is no number (a bool, a missing value) keeps its words instead of failing the alert
    ctx = template_values({"value": "是", "limit": "-", "count": "1"}, {"value": True, "limit": None, "count": 1})
    assert "{value:.1f} {limit:g}".format_map(ctx) == "是 -"


# -- CSV ---------------------------------------------------------------------------------
def test_compliance_csv_neutralises_formula_cells(service):
    url, _, database, influx_url = service
    day = (datetime.now(TZ) - timedelta(days=1)).date()
    t0 = int(datetime.combine(day, datetime.min.time(), TZ).timestamp() * 1000)
    lines = []
    for site in ("-1-1", "-2", "S1"):  # site ids may start with '-' ([A-Za-z0-9_-]{1,64})
        for i in range(0, 1440, 10):
            lines.append(f"dust,site={site},device=D{abs(hash(site)) % 1000},kind=dust pm10=80,spray_on=false,"
                         f"hoarding_intact=true,cover_ratio=100,hardened_ratio=100 {t0 + i * 60_000 + 5000}")
    r = httpx.post(f"{influx_url}/write", params={"db": database, "precision": "ms"}, content="\n".join(lines))
    assert r.status_code == 204, r.text
    r = httpx.get(f"{url}/v1/compliance/six100", params={"date": day.isoformat(), "format": "csv"},
                  headers=auth("viewer"), timeout=30)
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    sites = {row["site"] for row in rows}
    assert "'-1-1" in sites  # would be the formula -1-1 = -2 in a spreadsheet
    assert "-2" in sites  # a plain (negative) number stays a number
    assert "S1" in sites
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), row
            assert not cell.startswith("-") or cell == "-2", row


def test_csv_cells_that_start_a_formula_are_quoted():
    from api.compliance import csv_cell, to_csv
    from api.models import ComplianceItem, SiteCompliance

    for text in ("=HYPERLINK(\"http://x\",\"y\")", "+SUM(1,2)", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "-cmd|' /C calc'!A0"):
        assert csv_cell(text) == "'" + text
    for text in ("-2", "-2.5", "-1e3", "+5", "12.0", "S0001", "湿法作业", ""):
        assert csv_cell(text) == text
    item = ComplianceItem(item="wash", name_zh="=1+1", name_en="@x", percent=-0.0, passed=False, status="fail",
                          detail="-1+1 exits")
    rows = list(csv.reader(io.StringIO(to_csv([SiteCompliance(site="S1", date="2026-11-20", items=[item],
                                                              all_pass=False)]).lstrip("\ufeff"))))
    assert rows[1][3:5] == ["'=1+1", "'@x"] and rows[1][5] == "-0.0" and rows[1][8] == "'-1+1 exits"


# -- HTTP limits ----------------------------------------------------------------------------
def _half_sent(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
        socks.append(s)
    return socks


def _open_on_server(socks: list[socket.socket]) -> int:
    """How many of these connections the server still holds (not closed or reset)."""
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) != b"":
                alive += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def test_2000_half_sent_requests_do_not_take_the_api_down(service):
    url, proc, *_ = service
    port = int(url.rsplit(":", 1)[1])
    socks = _half_sent(port, 2000)
    try:
        # a normal request still answers, while the flood is connected
        r = httpx.get(f"{url}/health", timeout=10)
        assert r.status_code == 200, r.text
        r = httpx.get(f"{url}/v1/alerts", headers=auth("viewer"), timeout=10)
        assert r.status_code == 200, r.text
        time.sleep(0.5)
        held = _open_on_server(socks)
        assert held <= MAX_INCOMPLETE, held  # the rest were closed, oldest first
    finally:
        for s in socks:
            s.close()
    assert proc.proc.poll() is None  # the service is still up


def test_a_trickled_header_is_cut_at_the_deadline(service):
    url, *_ = service
    port = int(url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S * 10)
    closed_after = None
    start = time.monotonic()
    try:
        s.sendall(b"GET /health HTTP/1.1\r\n")
        for i in range(HEADER_TIMEOUT_S * 20):  # one header byte every 0.25 s: never complete
            time.sleep(0.25)
            try:
                s.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                closed_after = time.monotonic() - start
                break
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed_after = time.monotonic() - start
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed_after = time.monotonic() - start
                break
            finally:
                s.setblocking(True)
    finally:
        s.close()
    assert closed_after is not None, "a header trickled for 10 x the deadline was never cut"
    assert closed_after >= HEADER_TIMEOUT_S * 0.9  # not before the deadline


def test_sse_streams_per_token_are_capped(service):
    url, *_ = service
    opened: list[httpx.Response] = []
    statuses: list[int] = []
    clients = [httpx.Client(timeout=10) for _ in range(3)]
    try:
        for i in range(60):  # many stream requests on one token
            c = clients[i % len(clients)]
            req = c.build_request("GET", f"{url}/v1/alerts/stream", headers=auth("viewer"))
            resp = c.send(req, stream=True)
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                opened.append(resp)
            else:
                assert resp.status_code == 429 and "Retry-After" in resp.headers, resp.status_code
                resp.read()
                resp.close()
        assert statuses.count(200) == SSE_PER_TOKEN and statuses.count(429) == 60 - SSE_PER_TOKEN
        # another token still gets its stream, and ordinary requests answer
        with httpx.Client(timeout=10) as other:
            with other.stream("GET", f"{url}/v1/alerts/stream", headers=auth("viewer2")) as r:
                assert r.status_code == 200
        assert httpx.get(f"{url}/v1/alerts", headers=auth("viewer"), timeout=10).status_code == 200
        # a closed stream gives its place back
        opened.pop().close()
        deadline = time.monotonic() + 10
        while True:
            with httpx.Client(timeout=10) as c:
                with c.stream("GET", f"{url}/v1/alerts/stream", headers=auth("viewer")) as r:
                    if r.status_code == 200:
                        break
            assert time.monotonic() < deadline, "the closed stream's place never came back"
            time.sleep(0.2)
    finally:
        for resp in opened:
            resp.close()
        for c in clients:
            c.close()


def test_sse_flood_on_one_token_and_half_sent_requests_together(service):
    """Both at once, from threads: the API keeps answering."""
    url, *_ = service
    port = int(url.rsplit(":", 1)[1])
    stop = threading.Event()
    refused = []

    def sse_flood():
        with httpx.Client(timeout=10) as c:
            while not stop.is_set() and len(refused) < 300:
                with c.stream("GET", f"{url}/v1/alerts/stream", headers=auth("operator")) as r:
                    if r.status_code == 429:
                        refused.append(1)
                    else:
                        time.sleep(0.01)

    t = threading.Thread(target=sse_flood)
    t.start()
    socks = _half_sent(port, 500)
    try:
        ok = sum(httpx.get(f"{url}/health", timeout=10).status_code == 200 for _ in range(5))
        assert ok == 5
    finally:
        stop.set()
        t.join(30)
        for s in socks:
            s.close()


# -- logs ---------------------------------------------------------------------------------
def test_the_log_never_shows_url_userinfo(service):
    url, proc, *_ = service
    log = proc.log()
    assert "citywatch running" in log
    for secret in (INFLUX_PASSWORD, MQTT_PASSWORD, HOOK_TOKEN):
        assert secret not in log
    assert "InfluxDB http://***@127.0.0.1:" in log  # the address is shown, without its userinfo
    health = httpx.get(f"{url}/health", timeout=10).text + httpx.get(f"{url}/metrics", timeout=10).text
    for secret in (INFLUX_PASSWORD, MQTT_PASSWORD, HOOK_TOKEN):
        assert secret not in health


def test_unreachable_servers_are_one_warning_with_the_address(tmp_path):
    """Broker and InfluxDB down (URLs with passwords): one WARNING each naming the
    redacted address and the retry delay, no ERROR, no secret — not a line per retry."""
    import subprocess
    import sys

    from devtools.servers import free_port
    from tests.security.app_helpers import clean_environ

    mqtt_port, influx_port = free_port(), free_port()
    env = {**clean_environ(), "CW_DATA_DIR": str(tmp_path / "data"), "CW_LOG_FORMAT": "text",
           "CW_MQTT_URL": f"mqtt://citywatch:{MQTT_PASSWORD}@127.0.0.1:{mqtt_port}",
           "CW_INFLUX_URL": f"http://citywatch:{INFLUX_PASSWORD}@127.0.0.1:{influx_port}"}
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "app.cli", "run"], env=env, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "citywatch running" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(12)  # paho retries after 1, 2, 4, 8 s: four more failures in this time
    finally:
        p.terminate()
        p.wait(60)
    log = log_path.read_text()
    assert MQTT_PASSWORD not in log and INFLUX_PASSWORD not in log
    broker_lines = [x for x in log.splitlines() if "MQTT broker" in x and "unreachable" in x]
    assert len(broker_lines) == 1, broker_lines
    assert "WARNING" in broker_lines[0] and f"127.0.0.1:{mqtt_port}" in broker_lines[0]
    assert "retrying in 1 s" in broker_lines[0]
    assert f"http://***@127.0.0.1:{influx_port}" in log
    assert " ERROR " not in log, [x for x in log.splitlines() if " ERROR " in x]
