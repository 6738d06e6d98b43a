"""The route file: the sample loads, every problem is reported with its line, credentials
never appear in errors, and `citywatch routes check` / `citywatch run` act on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.receivers import RECEIVERS
from alerts.routing.config import load_routes, parse_routes
from app.cli import main
from citywatch.errors import ConfigError

SAMPLE = Path(__file__).parents[2] / "alerts" / "routing" / "routes.example.yaml"
GOOD = """\
receivers:
  - {name: a, type: dingtalk, url: "https://oapi.dingtalk.com/robot/send?access_token=TOPSECRET", secret: SECX}
route:
  receiver: a
"""


def test_the_commented_sample_loads_and_every_type_in_it_resolves():
    cfg = load_routes(SAMPLE)
    assert {r.type for r in cfg.receivers} == set(RECEIVERS)
    assert cfg.route.routes[0].continue_ is True
    assert cfg.route.routes[2].active_time == ["22:00-08:00"]


@pytest.mark.parametrize("text, line, reason", [
    # plain http to a public host
    (GOOD.replace("https://oapi", "http://oapi"), 2, "must be https://"),
    # an unknown label in a match (a typo must not silently match nothing)
    (GOOD + "  routes:\n    - {match: {kindd: dust}, receiver: a}\n", 6, "unknown label 'kindd'"),
    # a regex that does not compile
    (GOOD + "  routes:\n    - {match_re: {site: \"S(00\"}, receiver: a}\n", 6, "invalid regular expression"),
    # a route naming a receiver that does not exist
    (GOOD + "  routes:\n    - {match: {kind: dust}, receiver: nobody}\n", 6,
     "route.routes.0.receiver: unknown receiver 'nobody'"),
    # a bad time interval
    (GOOD + "  routes:\n    - {match: {kind: heating}, receiver: a, active_time: \"22-08\"}\n", 6,
     "active_time is HH:MM-HH:MM"),
    # a bad duration
    (GOOD + "  group_wait: soon\n", 5, "invalid duration"),
    # an unknown receiver type
    (GOOD.replace("type: dingtalk", "type: telegram"), 2, "does not match any of the expected tags"),
    # a YAML syntax error
    (GOOD + "  routes: [\n", 6, "not valid YAML"),
    # two receivers with one name
    (GOOD.replace("route:", "  - {name: a, type: wecom, url: \"https://qyapi.weixin.qq.com/x?key=K\"}\nroute:"), 1,
     "unique"),
    # a webhook signed with a short key (the same 32-byte floor as CW_ALERT_WEBHOOK_SECRET)
    (GOOD.replace("route:", "  - {name: w, type: webhook, url: \"https://x.example/h\", secret: short}\nroute:"), 3,
     "at least 32 bytes"),
    # an unknown key (a typo like `recevier`)
    (GOOD + "  recevier: a\n", 5, "Extra inputs are not permitted"),
])
def test_each_problem_is_reported_with_its_line_and_reason(text, line, reason):
    with pytest.raises(ConfigError) as err:
        parse_routes(text, "routes.yaml")
    msg = str(err.value)
    assert f"routes.yaml:{line}:" in msg and reason in msg, msg
    assert "TOPSECRET" not in msg and "SECX" not in msg


def test_loopback_http_is_allowed_and_secrets_stay_out_of_reprs():
    cfg = parse_routes(GOOD.replace("https://oapi.dingtalk.com", "http://127.0.0.1:9"))
    assert "TOPSECRET" not in repr(cfg) and "SECX" not in repr(cfg)


def test_routes_check_command(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(GOOD, "utf-8")
    assert main(["routes", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "ok: 1 receiver(s)" in out and "a (dingtalk)" in out and "TOPSECRET" not in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("https://", "http://"), "utf-8")
    assert main(["routes", "check", str(bad)]) == 2
    out = capsys.readouterr().out
    assert f"{bad}:2: receivers.0.url" in out and "TOPSECRET" not in out


def test_routes_check_warns_about_rule_ids_and_kinds_that_match_nothing(tmp_path, capsys):
    f = tmp_path / "w.yaml"
    f.write_text(GOOD + "  routes:\n    - {match: {kind: dust, rule: dust_pm10_10min}, receiver: a}\n"
                 "inhibit_rules:\n  - {source_match: {rule: dust_monitor_silent}, target_match: {kind: dustt}}\n",
                 "utf-8")
    assert main(["routes", "check", str(f)]) == 0  # valid: warnings only
    out = capsys.readouterr().out
    assert "warning: inhibit_rules.0.source_match: rule 'dust_monitor_silent' is not a loaded rule id" in out
    assert "warning: inhibit_rules.0.target_match: kind 'dustt' is not a known kind" in out
    assert "route.routes.0" not in out  # dust_pm10_10min is a shipped rule, dust a kind


def test_citywatch_run_with_an_invalid_route_file_stops_at_once(tmp_path):
    bad = tmp_path / "routes.yaml"
    bad.write_text(GOOD + "  routes:\n    - {match: {kind: dust}, receiver: nobody}\n", "utf-8")
    env = {**os.environ, "CW_ROUTES_FILE": str(bad), "CW_DATA_DIR": str(tmp_path / "data"),
           "CW_MQTT_URL": "mqtt://127.0.0.1:9", "CW_INGEST_PROCESS": "false"}
    proc = subprocess.run([sys.executable, "-m", "app.cli", "run"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "CW_ROUTES_FILE" in proc.stderr and "unknown receiver 'nobody'" in proc.stderr
    assert f"{bad}:6: route.routes.0.receiver" in proc.stderr
    assert not (tmp_path / "data" / "spool").exists()  # nothing started
