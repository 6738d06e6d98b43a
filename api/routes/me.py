"""`GET /v1/me`: who the token is (the dashboard shows or hides the ack button by role)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from api.deps import CtxDep, ScopeDep, ViewerDep
from api.models import Problem

router = APIRouter(prefix="/v1", tags=["health"])


class Me(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "王工", "role": "operator",
                                                               "tz": "Asia/Shanghai", "districts": ["xiaodian"]}]})
    name: str
    role: str
    tz: str
    districts: list[str] | None = None  # None: not limited to districts


@router.get("/me", response_model=Me, summary="The caller's name and role, and the display time zone",
            responses={401: {"model": Problem}})
def me(ctx: CtxDep, who: ViewerDep, scope: ScopeDep) -> Me:
    return Me(name=who.name, role=who.role.name, tz=str(ctx.tz),
              districts=None if scope.districts is None else sorted(scope.districts))
