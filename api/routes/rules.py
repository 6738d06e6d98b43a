"""Alert rules: read them all; replace or add one (admin), validated before the swap."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, status

from alerts import AlertError
from api.deps import AdminDep, EngineDep, ScopeDep, ViewerDep
from api.models import Problem, RuleErrors

router = APIRouter(prefix="/v1/rules", tags=["rules"])

RuleId = Annotated[str, Path(description="rule id", pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64,
                             examples=["dust_pm10_10min"])]
_EXAMPLE = {
    "id": "dust_pm10_10min", "kind": "dust", "severity": "major",
    "source": "晋城市 2020 扬尘在线监控通知", "when": {"field": "pm10", "agg": "mean", "window": "10m",
                                                  "min_coverage": 0.9,
                                                  "above": {"param": "pm10_set_value", "default": 120}},
    "keep_firing_for": "10m",
    "message": {"zh": "PM10 10分钟均值 {value} {unit} 超过设定值 {limit}，{action}",
                "en": "PM10 10-min mean {value} {unit} above set value {limit}; {action}"},
    "action": {"zh": "立即停工降尘", "en": "stop work and suppress dust immediately"},
}


@router.get("", response_model=list[dict[str, Any]], summary="All rules in force (shipped, files, overrides)",
            responses={401: {"model": Problem}, 403: {"model": Problem}})
def list_rules(_: ViewerDep, scope: ScopeDep, engine: EngineDep) -> list[dict[str, Any]]:
    return engine.list_rules()  # rules name no site: every scope reads them all


@router.get("/{rule_id}", response_model=dict[str, Any], summary="One rule",
            responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}})
def get_rule(_: ViewerDep, scope: ScopeDep, engine: EngineDep, rule_id: RuleId) -> dict[str, Any]:
    for r in engine.list_rules():
        if r["id"] == rule_id:
            return r
    raise HTTPException(status.HTTP_404_NOT_FOUND, "no such rule")


def _errors(message: str) -> list[dict[str, Any]]:
    # "PUT rule: rule x: severity: Input should be ...; source: Field required" → one item per problem
    text = re.sub(r"^PUT rule: (rule [^:]*: )?", "", message)
    out = []
    for part in (p.strip() for p in text.split("; ")):
        if not part:
            continue
        loc, sep, msg = part.partition(": ")
        if sep and re.fullmatch(r"[\w.\[\]-]{1,80}", loc):
            out.append({"loc": ["body", *loc.split(".")], "msg": msg, "type": "rule_error"})
        else:
            out.append({"loc": ["body"], "msg": part, "type": "rule_error"})
    return out or [{"loc": ["body"], "msg": message, "type": "rule_error"}]


@router.put("/{rule_id}", response_model=dict[str, Any], summary="Add or replace a rule (admin)",
            description="The body is one rule in the rule-file format (alerts/README.md). It is validated "
                        "completely (schema, kinds and fields, templates) and only then swapped in and "
                        "persisted; on error nothing changes and the answer is 422 with every problem. "
                        "`enabled: false` switches a rule off.",
            responses={401: {"model": Problem}, 403: {"model": Problem}, 422: {"model": RuleErrors}})
def put_rule(_: AdminDep, scope: ScopeDep, engine: EngineDep, rule_id: RuleId,
             doc: Annotated[dict[str, Any], Body(examples=[_EXAMPLE])]) -> dict[str, Any]:
    scope.require_unlimited("changing a rule")  # rules are the same for every district
    if "id" in doc and doc["id"] != rule_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["body", "id"], "msg": "id in the body differs from the path", "type": "value_error"}])
    try:
        return engine.put_rule({**doc, "id": rule_id})
    except AlertError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, _errors(str(exc))) from None
