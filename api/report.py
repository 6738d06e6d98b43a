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
    from ingest.evidence import EvidenceKeeper, EvidenceStore, evidence_path

    influx = InfluxClient(settings)
    # the kept evidence of a running (or past) service, where it covers the days asked
    path = evidence_path(settings.data_dir)
    keeper = EvidenceKeeper(EvidenceStore(path), influx) if path.exists() else None
    common = dict(tz=tz, now_ms=int(now.timestamp() * 1000), site=args.site, registry=registry, max_sites=100_000,
                  rules=rules, keeper=keeper)
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
        if keeper is not None:
            keeper.store.close()


async def _rebuild(args: argparse.Namespace, settings) -> str:
    """Re-read the local days' UTC days from InfluxDB into the kept evidence, with a bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from api.six100.days import day_bounds
    from citywatch.influx import InfluxClient
    from ingest.evidence import EvidenceKeeper, EvidenceStore, evidence_path

    tz = ZoneInfo(settings.tz)
    first = datetime.strptime(args.date_from, "%Y-%m-%d").date()
    last = datetime.strptime(args.date_to, "%Y-%m-%d").date()
    if last < first:
        raise ConfigError("report six100 --rebuild: --to is before --from")
    start_ms, end_ms = day_bounds(first, tz)[0], day_bounds(last, tz)[1]
    influx = InfluxClient(settings)
    store = EvidenceStore(evidence_path(settings.data_dir))
    columns = (TextColumn("重建 six-100 证据 rebuilding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task("rebuild", total=None)
            days = await EvidenceKeeper(store, influx).rebuild(
                start_ms, end_ms, progress=lambda done, total: bar.update(task, completed=done, total=total))
    finally:
        await influx.aclose()
        store.close()
    return f"rebuilt the kept six-100 evidence of {first}..{last} ({days} UTC day(s)) in {store.path}"


def run_report(args: argparse.Namespace, settings) -> int:
    if getattr(args, "rebuild", False):
        for name, value in (("--from", args.date_from), ("--to", args.date_to)):
            if not value or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise ConfigError(f"report six100 --rebuild: {name} YYYY-MM-DD is required")
        if args.date or args.month:
            raise ConfigError("report six100: --rebuild takes --from/--to, not --date/--month")
        try:
            print(asyncio.run(_rebuild(args, settings)))
        except ValueError:
            raise ConfigError("report six100 --rebuild: --from/--to is not a valid date") from None
        return 0
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
