"""Every regional pack loads (`citywatch rules check --pack`), cites its sources (README
table current), and is run against the six-100 scenarios on real InfluxDB data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alerts.packs import citation_table, pack_rules
from alerts.rules import PACKS_DIR, load_rules, rule_packs, rules_check
from citywatch.errors import ConfigError
from six100_data import minutes

PACKS = ["default", "hebei", "tianjin", "shanghai", "taiyuan", "beijing"]


def test_the_shipped_packs():
    assert rule_packs() == sorted(PACKS, key=lambda p: (p != "default", p))


@pytest.mark.parametrize("pack", PACKS)
def test_pack_checks_and_cites(pack, capsys):
    assert rules_check(["--pack", pack]) == 0
    assert f"ok: pack {pack}" in capsys.readouterr().out
    for rule in pack_rules(pack):
        c = rule.citation
        assert c is not None and c.standard and c.clause and c.edition, rule.id
        if not c.verified:  # an unconfirmed value says so in its file
            said = c.clause + c.note + rule.source + c.edition
            assert re.search(r"未\S{0,4}(核实|确认)|未能", said) or c.standard.startswith("数据质量规则"), rule.id
    readme = (PACKS_DIR / "README.md" if pack == "default" else PACKS_DIR / pack / "README.md").read_text("utf-8")
    assert citation_table(pack) in readme, f"regenerate the table: python -m alerts.packs {pack}"


def test_unknown_pack_stops_the_service_at_start(monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setenv("CW_RULE_PACK", "atlantis")
    assert main(["rules", "check"]) == 2  # the settings fail before anything starts
    err = capsys.readouterr().err
    assert "CW_RULE_PACK" in err and "'atlantis' is not a shipped rule pack" in err and "hebei" in err
    monkeypatch.setenv("CW_RULE_PACK", "../dust")
    assert main(["rules", "check"]) == 2


def test_unknown_pack_is_refused(capsys):
    with pytest.raises(ConfigError, match="unknown rule pack"):
        load_rules(pack="atlantis")
    assert rules_check(["--pack", "../dust"]) == 1


def test_two_corrected_citations():
    rules = load_rules()
    chlorine = rules["water_chlorine_range"]
    assert "表2" in chlorine.source and "消毒剂" in chlorine.source and "表A" not in chlorine.source
    for rid in ("heating_return_pressure_low", "heating_leak", "heating_makeup_flow_high"):
        assert "CJJ/T 34-2022" in rules[rid].source and "CJJ 34-2010 城镇供热管网设计标准" not in rules[rid].source
    assert "规范" in rules["heating_return_pressure_low"].source  # the 2010 edition was a 规范
    import yaml

    from alerts.rules import DEFAULT_RULES_DIR, parse_rule

    # The GB 3095 24-h reference rules ship off (alerts/README.md): read them from their file.
    docs = yaml.safe_load((DEFAULT_RULES_DIR / "dust.yaml").read_text("utf-8"))["rules"]
    optional = {d["id"]: parse_rule(d, "dust.yaml") for d in docs if d["id"] in ("dust_pm25_24h", "dust_tsp_24h")}
    assert optional["dust_pm25_24h"].citation.verified and "表1" in optional["dust_pm25_24h"].citation.clause
    assert optional["dust_tsp_24h"].when[0].threshold.default == 300


@pytest.mark.parametrize("pack", PACKS)
def test_pack_against_the_scenarios(db, pack):
    registry = db.registry("""
[[device]]
id = "D1"
site = "DUSTY"
kind = "dust"
equipment = ["dust_monitor"]

[[device]]
id = "D2"
site = "NOCAM"
kind = "dust"
equipment = ["dust_monitor", "spray_relay", "hoarding_camera", "cover_camera", "hardened_survey"]

[[device]]
id = "D3"
site = "FLAGGED"
kind = "dust"
equipment = ["dust_monitor"]
""")
    db.write(minutes("DUSTY", "D1", 0, 1440, "pm10=300")
             + minutes("NOCAM", "D2", 0, 1440, "pm10=60,spray_on=false,hoarding_intact=true,cover_ratio=100,"
                                               "hardened_ratio=100")
             + minutes("FLAGGED", "D3", 0, 1440, 'pm10=300,pm10_flag="D"'))
    r = db.report(registry=registry, pack=pack)
    assert r["DUSTY"]["wet_operation"].status == "fail" and r["DUSTY"]["all_pass"] is False
    assert r["NOCAM"]["wash"].reason == "not_equipped" and r["NOCAM"]["all_pass"] is True
    assert r["FLAGGED"]["wet_operation"].reason == "only_flagged" and r["FLAGGED"]["all_pass"] is False
    # the pack's own rules are in force
    rules = load_rules(pack=pack)
    assert {r.id for r in pack_rules(pack) if r.enabled} <= set(rules)  # shipped-off rules are not loaded


def test_pack_data_is_packaged():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text("utf-8"))
    data = pyproject["tool"]["setuptools"]["package-data"]["alerts"]
    assert "rules/packs/*/*.yaml" in data and "openpyxl>=3.1" in pyproject["project"]["dependencies"]


def test_hebei_report_limit_counts_the_background_up_to_150():
    """The report reads the same capped limit as the engine (tests/alerts/test_alerts_pack_cap.py)."""
    from alerts.rule_models import Threshold
    from api.six100.thresholds import threshold_value

    t = load_rules(pack="hebei")["dust_pm10_background_hourly"].when[0].threshold
    assert [threshold_value(t, {"pm10_background": bg}) for bg in (None, 40, 150, 200)] == [80, 120, 230, 230]
    with pytest.raises(ValueError, match="cap bounds a parameter"):
        Threshold.model_validate({"value": 80, "cap": 150})
