"""六个百分百 reports as XLSX (openpyxl): Chinese headers, one sheet per day, and for a
month a summary sheet first. Cells say 达标 / 不达标 / 无证据 / 无法监测; the reason of every
fail and no_evidence is in the item's 说明 column of the detail rows, and as a cell comment.
Opens in Excel and WPS (plain workbook, no macros, no external links)."""

from __future__ import annotations

import io
from collections.abc import Mapping

from openpyxl import Workbook
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from api.models import ComplianceItem, SiteCompliance
from api.six100.judge import ITEMS, NAMES

STATUS_ZH = {"pass": "达标", "fail": "不达标", "no_evidence": "无证据"}
FILL = {"达标": "C6EFCE", "不达标": "FFC7CE", "无证据": "FFEB9C", "无法监测": "D9D9D9"}
DAY_HEADERS = ["区县", "工地", *(NAMES[k][0] for k in ITEMS), "全部达标"]
DETAIL_HEADERS = ["日期", "区县", "工地", "项目", "结果", "百分比", "原因", "说明", "判定规则"]
MONTH_HEADERS = ["区县", "工地", "统计天数", "全部达标天数", "达标率(%)",
                 *(f"{NAMES[k][0]}不达标天数" for k in ITEMS), "无证据项次"]
REASON_ZH = {"not_equipped": "无法监测", "sensor_silent": "设备无数据", "only_flagged": "仅无效数据",
             "no_activity": "无事件", "no_rule": "无判定规则"}


def cell_text(item: ComplianceItem) -> str:
    if item.status == "no_evidence" and not item.measurable:
        return "无法监测"
    return STATUS_ZH[item.status]


def all_pass_text(site: SiteCompliance) -> str:
    return "—" if site.all_pass is None else ("是" if site.all_pass else "否")


def _append(ws, row: list) -> None:
    """Append a row; text is always text: openpyxl would store a string starting with `=`
    (a district name from the registry, say) as a formula."""
    ws.append(row)
    for c in ws[ws.max_row]:
        if isinstance(c.value, str) and c.value.startswith("="):
            c.data_type = "s"


def _header(ws, headers: list[str]) -> None:
    ws.append(headers)
    for i, _ in enumerate(headers, 1):
        c = ws.cell(row=1, column=i)
        c.font = Font(bold=True)
        c.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        ws.column_dimensions[get_column_letter(i)].width = 14
    ws.freeze_panes = "C2"


def _day_sheet(wb: Workbook, day: str, sites: list[SiteCompliance]) -> None:
    ws = wb.create_sheet(title=day)
    _header(ws, DAY_HEADERS)
    for s in sites:
        items: dict[str, ComplianceItem] = {i.item: i for i in s.items}
        row = [s.district or "", s.site, *(cell_text(items[k]) for k in ITEMS), all_pass_text(s)]
        _append(ws, row)
        r = ws.max_row
        for col, k in enumerate(ITEMS, 3):
            c = ws.cell(row=r, column=col)
            c.fill = PatternFill("solid", fgColor=FILL[c.value])
            if items[k].status != "pass":
                c.comment = Comment(items[k].detail_zh or items[k].detail, "citywatch")


def _details_sheet(wb: Workbook, by_day: Mapping[str, list[SiteCompliance]]) -> None:
    ws = wb.create_sheet(title="明细")
    _header(ws, DETAIL_HEADERS)
    ws.column_dimensions["H"].width = 60
    for day, sites in by_day.items():
        for s in sites:
            for i in s.items:
                _append(ws, [day, s.district or "", s.site, i.name_zh, cell_text(i),
                           i.percent, REASON_ZH.get(i.reason or "", ""), i.detail_zh, i.rule or ""])


def _month_sheet(wb: Workbook, month: str, by_day: Mapping[str, list[SiteCompliance]]) -> None:
    ws = wb.create_sheet(title=f"{month} 月汇总", index=0)
    _header(ws, MONTH_HEADERS)
    acc: dict[str, dict] = {}
    for sites in by_day.values():
        for s in sites:
            a = acc.setdefault(s.site, {"district": s.district or "", "judged": 0, "all": 0,
                                        "fail": dict.fromkeys(ITEMS, 0), "none": 0})
            if s.all_pass is not None:
                a["judged"] += 1
                a["all"] += s.all_pass
            for i in s.items:
                a["fail"][i.item] += i.status == "fail"
                a["none"] += i.status == "no_evidence" and i.measurable
    for site in sorted(acc):
        a = acc[site]
        rate = round(a["all"] / a["judged"] * 100, 1) if a["judged"] else None
        _append(ws, [a["district"], site, a["judged"], a["all"], rate, *(a["fail"][k] for k in ITEMS), a["none"]])


def day_workbook(day: str, sites: list[SiteCompliance]) -> bytes:
    wb = Workbook()
    wb.remove(wb.active)
    _day_sheet(wb, day, sites)
    _details_sheet(wb, {day: sites})
    return _bytes(wb)


def month_workbook(month: str, by_day: Mapping[str, list[SiteCompliance]]) -> bytes:
    wb = Workbook()
    wb.remove(wb.active)
    for day, sites in by_day.items():
        _day_sheet(wb, day, sites)
    _month_sheet(wb, month, by_day)
    _details_sheet(wb, by_day)
    return _bytes(wb)


def _bytes(wb: Workbook) -> bytes:
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
