"""`citywatch report six100 --date D | --month M`: the six-100 report from InfluxDB to an
XLSX (default) or CSV file, with the same judgement, rules (CW_RULE_PACK, CW_RULES_DIR) and
registry (CW_DEVICES_FILE) as the API. No service needs to run."""

from __future__ import annotations

import argparse
import asyncio
import re
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from citywatch.errors import ConfigError


async def _build(args: argparse.Namespace, settings) -> tuple[bytes, str, str]:
    from alerts.rules import load_rules
    from api import compliance
    from api.six100 import item_rules
    from api.six100.xlsx import day_workbook, month_workbook
    from citywatch.influx import InfluxClient
    from citywatch.registry import Registry

    tz = ZoneInfo(settings.tz)
    now = datetime.now(tz)
    rules = item_rules(load_rules(settings.rules_dir, pack=settings.rule_pack), settings.rule_pack)
    registry = Registry.load(settings.devices_file) if settings.devices_file else None
    influx = InfluxClient(settings)
    common = dict(tz=tz, now_ms=int(now.timestamp() * 1000), site=args.site, registry=registry, max_sites=100_000,
                  rules=rules)
    try:
        if args.month:
            days = compliance.month_days(args.month, now.date())
            by_day = await compliance.six100_month(influx, days=days, **common)
            if args.format == "csv":
                body = "".join(compliance.to_csv(s).lstrip("\ufeff").split("\r\n", 1)[1] for s in by_day.values())
                text = "\ufeff" + ",".join(compliance.CSV_COLUMNS) + "\r\n" + body
                return text.encode("utf-8"), f"六个百分百-{args.month}.csv", f"{len(days)} day(s)"
            return month_workbook(args.month, by_day), f"六个百分百-{args.month}.xlsx", f"{len(days)} day(s)"
        day = datetime.strptime(args.date, "%Y-%m-%d").date()
        sites = await compliance.six100(influx, day=day, **common)
        summary = f"{len(sites)} site(s), {sum(1 for s in sites if s.all_pass)} all pass"
        if args.format == "csv":
            return compliance.to_csv(sites).encode("utf-8"), f"六个百分百-{args.date}.csv", summary
        return day_workbook(args.date, sites), f"六个百分百-{args.date}.xlsx", summary
    finally:
        await influx.aclose()


def run_report(args: argparse.Namespace, settings) -> int:
    if bool(args.date) == bool(args.month):
        raise ConfigError("report six100: give --date YYYY-MM-DD or --month YYYY-MM")
    if args.date and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date):
        raise ConfigError("report six100: --date must be YYYY-MM-DD")
    if args.month and not re.fullmatch(r"\d{4}-\d{2}", args.month):
        raise ConfigError("report six100: --month must be YYYY-MM")
    if args.site is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.site):
        raise ConfigError("report six100: --site must match [A-Za-z0-9_-]{1,64}")
    body, name, summary = asyncio.run(_build(args, settings))
    out = Path(args.out) if args.out else Path(name)
    out.write_bytes(body)
    print(f"wrote {out} ({summary}, rule pack {settings.rule_pack})")
    return 0
