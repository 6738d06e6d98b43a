"""`citywatch report six100 --date/--month`: the report from InfluxDB to XLSX/CSV, checked
cell by cell with openpyxl."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from app.cli import main
from six100_data import DAY, minutes, vehicle_exit


def _env(monkeypatch, db, tmp_path, **extra):
    monkeypatch.setenv("CW_INFLUX_URL", db.url)
    monkeypatch.setenv("CW_INFLUX_DATABASE", db.name)
    monkeypatch.setenv("CW_DATA_DIR", str(tmp_path / "data"))
    devices = tmp_path / "devices.toml"
    devices.write_text('[[device]]\nid = "D1"\nsite = "S1"\nkind = "dust"\ndistrict = "城区"\n'
                       'equipment = ["dust_monitor", "plate_camera", "wash_sensor"]\n', "utf-8")
    monkeypatch.setenv("CW_DEVICES_FILE", str(devices))
    for k, v in extra.items():
        monkeypatch.setenv(k, v)


def test_report_day_xlsx_and_csv(db, tmp_path, monkeypatch, capsys):
    db.write(minutes("S1", "D1", 0, 1440, "pm10=300") + [vehicle_exit("S1", "D1", 600, covered=False)])
    _env(monkeypatch, db, tmp_path)
    out = tmp_path / "day.xlsx"
    assert main(["report", "six100", "--date", DAY, "--out", str(out)]) == 0
    assert "1 site(s), 0 all pass" in capsys.readouterr().out
    ws = load_workbook(out)[DAY]
    assert [c.value for c in ws[2]] == ["城区", "S1", "无法监测", "无法监测", "达标", "无法监测", "不达标", "不达标",
                                        "达标", "否"]
    assert "无喷淋证据" in ws.cell(row=2, column=7).comment.text
    assert "未登记" in ws.cell(row=2, column=3).comment.text
    csv_out = tmp_path / "day.csv"
    assert main(["report", "six100", "--date", DAY, "--format", "csv", "--out", str(csv_out)]) == 0
    rows = list(csv.DictReader(io.StringIO(csv_out.read_text("utf-8-sig"))))
    assert len(rows) == 7 and {r["district"] for r in rows} == {"城区"}
    wet = next(r for r in rows if r["item"] == "wet_operation")
    assert wet["status"] == "fail" and wet["pass"] == "false"
    hoarding = next(r for r in rows if r["item"] == "hoarding")
    assert hoarding["status"] == "no_evidence" and hoarding["reason"] == "not_equipped" and hoarding["pass"] == ""


def test_report_month_with_a_regional_pack(db, tmp_path, monkeypatch, capsys):
    db.write(minutes("S1", "D1", 0, 1440, "pm10=80"))
    _env(monkeypatch, db, tmp_path, CW_RULE_PACK="hebei")
    out = tmp_path / "month.xlsx"
    assert main(["report", "six100", "--month", DAY[:7], "--out", str(out)]) == 0
    assert "rule pack hebei" in capsys.readouterr().out
    wb = load_workbook(out)
    summary = wb[wb.sheetnames[0]]
    assert summary.title == f"{DAY[:7]} 月汇总"
    row = [c.value for c in summary[2]]
    # S1 is registered, so every day of the month is judged; only DAY had data (and no exit)
    assert row[:2] == ["城区", "S1"] and row[3] == 0 and row[2] >= 20
    assert wb[DAY].cell(row=2, column=7).value == "达标"


def test_report_arguments(db, tmp_path, monkeypatch, capsys):
    _env(monkeypatch, db, tmp_path)
    assert main(["report", "six100"]) == 2
    assert main(["report", "six100", "--date", "2026-1-1"]) == 2
    assert main(["report", "six100", "--month", "2026-11", "--date", DAY]) == 2
    assert "give --date" in capsys.readouterr().err
