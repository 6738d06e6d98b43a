"""Rule files: the shipped packs validate; broken rules give file + rule id + what is wrong;
CW_RULES_DIR overrides by id; the CLI returns 0/1; the public surface is pinned."""

from __future__ import annotations

import textwrap

import pytest

import alerts
from alerts import check_rules, load_rules, parse_rule, rules_check
from alerts.rules import DEFAULT_RULES_DIR, parse_duration
from citywatch.errors import ConfigError

GOOD = """
rules:
  - id: my_pm25
    kind: dust
    severity: warning
    source: "GB 3095-2012 二级 PM2.5 24 h 75 µg/m³"
    when: {field: pm25, agg: mean, window: 1h, above: 75}
    message: {zh: "PM2.5 {value} {unit} 超过 {limit}，{action}", en: "PM2.5 {value} {unit} above {limit}; {action}"}
    action: {zh: "加强洒水", en: "increase watering"}
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), "utf-8")
    return p


def test_shipped_packs_are_valid():
    # the default packs load cleanly and every rule cites a source
    assert check_rules([DEFAULT_RULES_DIR]) == []
    rules = load_rules()
    assert len(rules) >= 25 and all(len(r.source) > 5 for r in rules.values())


@pytest.mark.parametrize("patch,fragment", [
    (("id: my_pm25", "id: my pm25"), "id must match"),                                   # bad identifier
    (("kind: dust", "kind: gas"), "unknown kind 'gas'"),                                  # unknown kind
    (("field: pm25", "field: pm2_5"), "field 'pm2_5' is not a field of kind dust"),       # unknown field
    (("above: 75", "above: 75, below: 3"), "give exactly one of"),                        # two comparisons
    (("window: 1h", "window: soon"), "invalid duration"),                                 # bad duration
    (("{limit}，", "{limt}，"), "unknown placeholder"),                                    # template typo
    (('    source: "GB 3095-2012 二级 PM2.5 24 h 75 µg/m³"\n', ""), "source"),             # no source
    (("severity: warning", "severity: severe"), "severity"),                              # bad severity
    (("agg: mean, window: 1h, ", ""), None),                                              # last value: valid
    (("agg: mean, window: 1h, ", "agg: mean, "), "needs a window"),                       # agg without window
])
def test_invalid_rules_name_file_rule_and_problem(tmp_path, patch, fragment):
    p = write(tmp_path, GOOD.replace(*patch))
    errors = check_rules([p])
    if fragment is None:
        assert errors == []
        return
    assert len(errors) == 1, errors
    assert str(p) in errors[0] and fragment in errors[0], errors[0]
    assert "my_pm25" in errors[0] or "my pm25" in errors[0]


def test_boolean_field_needs_is(tmp_path):
    # comparing a boolean with a number is caught at load time
    p = write(tmp_path, GOOD.replace("field: pm25, agg: mean, window: 1h, above: 75", "field: spray_on, above: 1"))
    assert "boolean" in check_rules([p])[0]


def test_duplicate_ids_in_one_layer(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    assert "duplicate id" in check_rules([tmp_path])[0]


def test_rules_dir_overrides_and_disables_by_id(tmp_path):
    # CW_RULES_DIR: a rule with a shipped id replaces it; enabled: false removes it; new ids add
    over = GOOD.replace("id: my_pm25", "id: dust_hardened_ratio") + (
        "  - id: water_ph_range\n"
        "    kind: water\n"
        "    severity: major\n"
        "    source: disabled locally\n"
        "    enabled: false\n"
        "    when: {field: ph, outside: [6.5, 8.5]}\n"
        "    message: {zh: x, en: x}\n"
        "    action: {zh: x, en: x}\n")
    write(tmp_path, over)
    write(tmp_path, GOOD, "extra.yaml")
    rules = load_rules(tmp_path)
    assert rules["dust_hardened_ratio"].primary_field == "pm25"
    assert "water_ph_range" not in rules and "my_pm25" in rules


def test_load_rules_raises_with_every_error(tmp_path):
    write(tmp_path, GOOD.replace("kind: dust", "kind: gas"), "a.yaml")
    write(tmp_path, "rules: 3\n", "b.yaml")
    with pytest.raises(ConfigError) as exc:
        load_rules(tmp_path)
    assert "a.yaml" in str(exc.value) and "b.yaml" in str(exc.value)


def test_cli_rules_check(tmp_path, capsys):
    # `citywatch rules check [--dir D]` → 0 when valid, 1 with the errors printed
    assert rules_check([]) == 0
    assert "ok:" in capsys.readouterr().out
    write(tmp_path, GOOD.replace("field: pm25", "field: nope"))
    assert rules_check(["--dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "error:" in out and "nope" in out


@pytest.mark.parametrize("text,seconds", [(90, 90.0), ("30s", 30.0), ("10m", 600.0), ("1h30m", 5400.0), ("24h", 86400.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_rule_for_api():
    # PUT /v1/rules/{id} validates one mapping the same way
    import yaml

    doc = yaml.safe_load(GOOD)["rules"][0]
    assert parse_rule(doc).id == "my_pm25"
    with pytest.raises(ConfigError, match="my_pm25"):
        parse_rule({**doc, "severity": "huge"})


def test_put_rule_swaps_and_persists(tmp_path):
    # a rule PUT through the engine applies at once and survives a restart
    import yaml

    from alerts import AlertEngine, EngineConfig

    doc = yaml.safe_load(GOOD)["rules"][0]
    e = AlertEngine(EngineConfig(state_path=tmp_path / "a.sqlite3", time_mode="event"))
    e.put_rule(doc)
    assert any(r["id"] == "my_pm25" for r in e.list_rules())
    e.close()
    e2 = AlertEngine(EngineConfig(state_path=tmp_path / "a.sqlite3", time_mode="event"))
    assert "my_pm25" in e2.rules
    with pytest.raises(alerts.AlertError):
        e2.put_rule({**doc, "kind": "nope"})
    e2.close()


def test_public_surface_is_pinned():
    assert sorted(alerts.__all__) == sorted([
        "AlertEngine", "AlertError", "AlertNotFound", "Backoff", "Delivery", "EngineConfig", "MqttNotifier", "Notification",
        "NotificationHub", "Notifier", "OutboxDispatcher", "Rule", "SinkNotifier", "WebhookNotifier",
        "build_alerting", "check_rules", "load_rules", "parse_rule", "rules_check", "sign"])


def test_build_alerting_with_sink(tmp_path):
    # the service helper: engine + tasks; alert history goes through the sink as line protocol
    import asyncio

    from alerts_helpers import T0, series
    from citywatch.settings import Settings

    class Sink:
        def __init__(self):
            self.got = []

        def submit(self, outcome, on_durable=None):
            self.got.append(outcome)
            if on_durable:
                on_durable(True)

    sink = Sink()
    settings = Settings(data_dir=tmp_path)
    engine, tasks = alerts.build_alerting(settings, sink=sink, mqtt=False)
    assert engine.store.path == settings.alert_state_path and len(tasks) == 1
    tasks[0].close()  # not run here
    engine.process_readings(series("H1", T0, 2, {"leak_detected": True}))
    assert asyncio.run(engine.drain(5))
    (outcome,) = sink.got
    assert outcome.raw.topic == "alerts/S1/H1/heating_leak" and outcome.raw.source == "alerts"
    line = outcome.lines[0]
    assert line.startswith("alerts,device=H1,kind=heating,rule=heating_leak,severity=critical,site=S1 ")
    assert 'state="firing"' in line
    engine.close()
