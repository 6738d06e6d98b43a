"""Response and request bodies (pydantic), with examples for the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["info", "warning", "major", "critical"]
AlertState = Literal["pending", "firing", "resolved"]


class Problem(BaseModel):
    detail: Any = Field(description="what went wrong (a string, or a list of validation errors)")


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ok", "mqtt": "connected", "influx": "ok", "spool_backlog": 0, "writer": "ok",
         "alerts": "running", "intake": "running", "disk_free_bytes": 52_428_800_000,
         "storage": {"spool": "ok", "deadletters": "ok", "alert_state": "ok"}}]})
    status: Literal["ok", "degraded"]
    mqtt: Literal["connected", "disconnected", "disabled"]
    influx: Literal["ok", "unreachable"]
    spool_backlog: int = Field(description="lines spooled locally and not yet in InfluxDB")
    receivers: dict[str, Literal["ok", "retrying", "down"]] | None = Field(
        default=None, description="only with CW_ROUTES_FILE: each routed receiver; `down` after 3 failed sends in a "
                                  "row (its messages wait in the outbox), which makes the status `degraded`")
    writer: Literal["ok", "retrying"] = "ok"
    alerts: Literal["running", "disabled"] = "running"
    intake: Literal["running", "paused"] = Field(
        "running", description="paused: free disk under the data directory fell below the pause threshold; "
                               "messages wait in the broker until space returns (then it resumes by itself)")
    disk_free_bytes: int | None = Field(None, description="free bytes on the data directory's filesystem")
    storage: dict[str, str] = Field(
        default_factory=dict, description="each local store (spool, deadletters, alert_state): ok, or the error "
                                          "its writes fail with (retried; nothing is acknowledged or lost meanwhile)")


class LatestReading(BaseModel):
    kind: str
    site: str
    device: str
    time: str = Field(description="time of the reading, local time (CW_TZ) with offset")
    ts_ms: int = Field(description="time of the reading, epoch milliseconds (UTC)")
    values: dict[str, float | bool | None]
    flags: dict[str, str] = Field(default_factory=dict, description=(
        "HJ 212 data flag per field (N F M S D C T B), as the monitor sent it; a field without one (e.g. "
        "MQTT readings) is valid. Only N and S (or none) count for rules and compliance."))


class LatestResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [
        {"kind": "dust", "site": "S0001", "device": "D00001", "time": "2026-11-27T10:42:00+08:00",
         "ts_ms": 1795761720000, "values": {"pm10": 86.5, "pm25": 41.0, "noise": 58.2, "spray_on": True}}]}]})
    items: list[LatestReading]


class Series(BaseModel):
    site: str
    device: str
    points: list[tuple[int, float | bool | None]] = Field(
        description="[epoch ms (UTC) of the bucket start, aggregated value]")
    flags: list[tuple[int, str]] = Field(default_factory=list, description=(
        "[epoch ms of the bucket start, HJ 212 flag]: buckets holding a value flagged other than N/S "
        "(the newest such flag); rules and compliance skip those values"))


class SeriesResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "kind": "dust", "field": "pm10", "unit": "µg/m³", "agg": "mean", "every": "1m",
        "start": "2026-11-27T10:00:00+08:00", "end": "2026-11-27T11:00:00+08:00",
        "series": [{"site": "S0001", "device": "D00001", "points": [[1795759200000, 162.4]]}]}]})
    kind: str
    field: str
    unit: str
    agg: Literal["mean", "max", "min", "last"]
    every: str
    start: str
    end: str
    series: list[Series]


class Alert(BaseModel):
    """The docs/contract.md §3 alert payload, plus acknowledgement details."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "id": "3f1c2a9b7d0e4c5f6a7b", "rule": "dust_pm10_10min", "severity": "major", "state": "firing",
        "acked": False, "kind": "dust", "site": "S0001", "device": "D00001", "field": "pm10", "value": 162.4,
        "threshold": 150, "started_at": "2026-11-27T10:30:00+08:00", "resolved_at": None,
        "message": "PM10 10分钟均值 162.4 µg/m³ 超过设定值 150，立即停工降尘",
        "message_en": "PM10 10-min mean 162.4 µg/m³ above set value 150; stop work and suppress dust immediately",
        "fired_at": "2026-11-27T10:40:00+08:00", "acked_by": None, "acked_at": None, "ack_note": None}]})
    id: str
    rule: str
    severity: Severity
    state: AlertState
    acked: bool
    kind: str
    site: str
    device: str
    field: str | None = None
    value: Any = None
    threshold: Any = None
    started_at: str | None = None
    resolved_at: str | None = None
    message: str = ""
    message_en: str = ""
    fired_at: str | None = None
    acked_by: str | None = None
    acked_at: str | None = None
    ack_note: str | None = None


class AlertPage(BaseModel):
    items: list[Alert]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last page")


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"note": "已通知现场停工降尘"}]})
    note: str = Field(default="", max_length=500, description="why / what was done (shown in the history)")


class RuleErrors(BaseModel):
    detail: list[dict[str, Any]]


Six100Item = Literal["hoarding", "cover", "wash", "hardened", "wet_operation", "muck_covered", "monitoring"]
EvidenceReason = Literal["not_equipped", "sensor_silent", "only_flagged", "no_activity", "no_rule"]


class ComplianceItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    item: Six100Item
    name_zh: str
    name_en: str
    percent: float | None = Field(description="0-100; null when there is no evidence to judge")
    passed: bool | None = Field(alias="pass", description="null when there is no evidence to judge")
    status: Literal["pass", "fail", "no_evidence"] = Field(
        description="no_evidence is never a pass: no such sensor registered, sensor silent, only flagged "
                    "values, nothing happened to judge, or no rule for the item in the pack")
    reason: EvidenceReason | None = Field(default=None, description="why there is no evidence (status no_evidence)")
    measurable: bool = Field(default=True, description="false: the site has no means (registry equipment) to "
                                                       "measure this item; it does not count in all_pass")
    rule: str | None = Field(default=None, description="the rule whose set value and tolerance judged the item")
    detail: str = ""
    detail_zh: str = ""


class SiteCompliance(BaseModel):
    site: str
    date: str
    district: str | None = None
    items: list[ComplianceItem]
    all_pass: bool | None = Field(description="true only when every item the site can measure passed; "
                                              "null when it can measure none")


class ComplianceResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"date": "2026-11-27", "tz": "Asia/Shanghai",
                                                               "pack": "default", "sites": [
        {"site": "S0001", "date": "2026-11-27", "district": "城区", "all_pass": False, "items": [
            {"item": "wet_operation", "name_zh": "湿法作业", "name_en": "wet operation", "percent": 0.0,
             "pass": False, "status": "fail", "reason": None, "measurable": True, "rule": "dust_wet_operation",
             "detail": "1 episode(s) of PM10 > 150 for >= 10 min without spraying",
             "detail_zh": "PM10 超过 150 持续 >= 10 分钟且无喷淋 1 次"}]}]}]})
    date: str
    tz: str
    pack: str = "default"
    sites: list[SiteCompliance]


class MonthSiteDay(BaseModel):
    date: str
    all_pass: bool | None
    failed: list[Six100Item]
    no_evidence: list[Six100Item]
    reasons: dict[str, str] = Field(default_factory=dict, description="item -> zh reason of each fail/no_evidence")


class MonthSite(BaseModel):
    site: str
    district: str | None = None
    days_all_pass: int
    days_judged: int
    days: list[MonthSiteDay]


class ComplianceMonthResponse(BaseModel):
    month: str
    tz: str
    pack: str = "default"
    days: list[str]
    sites: list[MonthSite]


class DeadLetterView(BaseModel):
    id: int
    received_at: str
    received_ms: int
    source: str
    topic: str
    payload: str = Field(description="raw payload (UTF-8, first 4 KiB), HJ 212 PW=*** redacted")
    payload_bytes: int
    reasons: list[str]
    replayed_ms: int | None = None


class DeadLetterPage(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"total": 1, "limit": 100, "offset": 0, "items": [
        {"id": 1, "received_at": "2026-11-27T10:00:00+08:00", "received_ms": 1795759200000, "source": "mqtt",
         "topic": "telemetry/dust/S0001/D00001", "payload": "{\"ts\": 1, \"values\": {}}", "payload_bytes": 24,
         "reasons": ["bad_timestamp: ts 1 is before 2000-01-01"], "replayed_ms": None}]}]})
    total: int
    limit: int
    offset: int
    items: list[DeadLetterView]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = Field(default=False, description="only report what would pass; change nothing")


class ReplayResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"accepted": 12, "still_rejected": 3,
                                                               "dry_run": False}]})
    accepted: int
    still_rejected: int
    dry_run: bool
