"""Test data for the six-100 compliance tests: a database on a real InfluxDB filled with line protocol in the layout the
ingest writes — HJ 212 quality flags as `<field>_flag` string fields in the same point —
and the report computed by `api.compliance.six100` straight from it."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

TZ = ZoneInfo("Asia/Shanghai")
DAY = "2026-11-20"
T0 = int(datetime.fromisoformat(f"{DAY}T00:00:00").replace(tzinfo=TZ).timestamp() * 1000)
MIN = 60_000
NOW_MS = T0 + 10 * 86_400_000  # the day is whole and in the past


@dataclass
class Db:
    url: str
    name: str
    tmp: Path

    def write(self, lines) -> None:
        r = httpx.post(f"{self.url}/write", params={"db": self.name, "precision": "ms"},
                       content="\n".join(lines).encode())
        assert r.status_code == 204, r.text

    def settings(self, **over):
        from citywatch.settings import Settings

        return Settings(influx_url=self.url, influx_database=self.name, data_dir=self.tmp / "data",
                        log_format="text", **over)

    def registry(self, toml: str):
        from citywatch.registry import Registry

        path = self.tmp / f"devices-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(toml, "utf-8")
        return Registry.load(path)

    def report(self, *, registry=None, rules=None, pack: str = "default", site: str | None = None,
               day: str = DAY, rules_dir: Path | None = None):
        """{site: {"all_pass": ..., item: ComplianceItem}} for the day."""
        from alerts.rules import load_rules
        from api import compliance
        from api.six100 import item_rules
        from citywatch.influx import InfluxClient

        ir = item_rules(rules if rules is not None else load_rules(rules_dir, pack=pack), pack)

        async def go():
            influx = InfluxClient(self.settings())
            try:
                return await compliance.six100(influx, day=date.fromisoformat(day), tz=TZ, now_ms=NOW_MS, site=site,
                                               registry=registry, max_sites=500, rules=ir)
            finally:
                await influx.aclose()

        return {s.site: {"all_pass": s.all_pass, "district": s.district, **{i.item: i for i in s.items}}
                for s in asyncio.run(go())}


def minutes(site: str, device: str, first: int, last: int, fields: str | callable) -> list[str]:
    """One dust point a minute (at second 5) for minutes [first, last) of the day."""
    out = []
    for i in range(first, last):
        f = fields(i) if callable(fields) else fields
        out.append(f"dust,site={site},device={device} {f} {T0 + i * MIN + 5000}")
    return out


def vehicle_exit(site: str, device: str, minute: int, *, washed=True, wash_seconds=90, covered=True) -> str:
    return (f'events,kind=dust,site={site},device={device},type=vehicle_exit plate="晋E00001",'
            f"washed={str(washed).lower()},wash_seconds={wash_seconds},covered={str(covered).lower()} "
            f"{T0 + minute * MIN + 20_000}")
