"""Helpers for routing tests: small rule sets, a route file writer, an engine + routing pair."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from alerts import AlertEngine, EngineConfig
from alerts.notify import Backoff
from alerts.routing import Routing, build_routing
from alerts.rules import parse_rule
from alerts.testing import FakeClock
from citywatch.model import Reading

TZ = ZoneInfo("Asia/Shanghai")
DASHBOARD = "https://citywatch.example.gov.cn/"


def local_s(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=TZ).timestamp()


def _threshold(rid: str, kind: str, field: str, above: float, severity: str = "major") -> dict[str, Any]:
    return {"id": rid, "kind": kind, "severity": severity, "source": "test", "when": {"field": field, "above": above},
            "message": {"zh": f"{field} {{value}} {{unit}} 超过 {{limit}}", "en": f"{field} {{value}} above {{limit}}"},
            "action": {"zh": "处置", "en": "act"}}


RULES = [parse_rule(d) for d in (
    _threshold("dust_pm10_high", "dust", "pm10", 150),
    _threshold("dust_pm25_high", "dust", "pm25", 75),
    _threshold("dust_tsp_high", "dust", "tsp", 300),
    _threshold("dust_noise_high", "dust", "noise", 70, "warning"),
    _threshold("heating_leak", "heating", "primary_supply_pressure", 1.6, "critical"),
    {"id": "dust_no_data", "kind": "dust", "type": "deadman", "severity": "major", "source": "test", "factor": 3,
     "default_interval": "60s", "message": {"zh": "{device} 已 {value} 秒无数据", "en": "{device} silent {value} s"},
     "action": {"zh": "检查", "en": "check"}},
)]

ROUTES = """\
receivers:
  - {{name: dust-office, type: dingtalk, url: "{ding}", secret: "{ding_secret}", at_mobiles: ["13800000000"]}}
  - {{name: heating-oncall, type: wecom, url: "{wecom}"}}
  - {{name: archive, type: webhook, url: "{archive}", secret: "{archive_secret}"}}
route:
  receiver: archive
  group_by: [site]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - {{match: {{kind: dust}}, receiver: dust-office, continue: true}}
    - {{match: {{kind: heating, severity: critical}}, receiver: heating-oncall, active_time: "22:00-08:00"}}
inhibit_rules:
  - {{source_match: {{rule: dust_no_data}}, target_match: {{kind: dust}}, equal: [device]}}
"""


def write_routes(path: Path, text: str) -> Path:
    path.write_text(text, "utf-8")
    return path


def make_pair(tmp: Path, routes_text: str, clock: FakeClock, *, rules=RULES, name: str = "alerts") \
        -> tuple[AlertEngine, Routing]:
    """A real engine (wall-time mode on the fake clock) whose only notifier is the routing stage."""
    settings = SimpleNamespace(rule_pack="default", routes_file=write_routes(tmp / f"{name}-routes.yaml", routes_text),
                               dashboard_url=DASHBOARD, tz="Asia/Shanghai")
    routing = build_routing(settings, clock=clock)
    config = EngineConfig(state_path=tmp / f"{name}.sqlite3", time_mode="wall", tz="Asia/Shanghai",
                          backoff=Backoff(initial_s=0.01, max_s=0.05))
    engine = AlertEngine(config, rules=rules, notifiers=[routing.stage], clock=clock)
    routing.attach(engine.store)
    return engine, routing


async def pump(engine: AlertEngine) -> None:
    """Hand the engine's queued alert changes to its notifiers (the routing stage) now."""
    for d in engine._dispatchers:  # the engine's own delivery stage, stepped instead of run
        while (await d.step()) == 0.0:
            pass


def reading(kind: str, site: str, device: str, clock: FakeClock, **values: Any) -> Reading:
    return Reading(kind, site, device, int(clock() * 1000), values)
