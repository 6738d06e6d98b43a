"""Dependencies as `Annotated` aliases (FastAPI full-stack template style).

    async def handler(ctx: CtxDep, who: OperatorDep, kind: KindQuery): ...

Every identifier that may end up in InfluxQL (kind, site, device, field) is checked here
twice: by the query parameter's anchored pattern (which also documents it in OpenAPI), and
again against `citywatch.topics.is_identifier` and the kinds schema, before any handler runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Principal, Role, TokenStore
from citywatch.schema import KindSpec
from citywatch.topics import is_identifier

if TYPE_CHECKING:  # for the type checker only: at run time api needs none of these modules
    from alerts.engine import AlertEngine
    from api.metrics import ApiMetrics
    from citywatch.settings import Settings
    from ingest.service import Ingest

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


@dataclass
class Limits:
    max_range_days: float = 31.0
    max_points: int = 5000  # per series of /v1/series
    max_series: int = 50  # devices per /v1/series answer
    max_page: int = 500
    heartbeat_s: float = 15.0  # SSE comment interval
    compliance_max_sites: int = 2000  # a city of 1,000 sites whole; kept evidence answers it (api/six100/kept.py)
    sse_per_token: int = 8  # open /v1/alerts/stream per token (CW_API_SSE_PER_TOKEN); 429 beyond


class StreamLeases:
    """Open SSE streams per token. `take` at request time (so that a burst of requests is
    counted before any stream starts); the lease is given back exactly once, when the
    stream ends or, if it never started, when its generator is collected."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}

    def take(self, key: int, limit: int) -> "Callable[[], None] | None":
        with self._lock:
            if self._open.get(key, 0) >= limit:
                return None
            self._open[key] = self._open.get(key, 0) + 1
        done = threading.Event()

        def give_back() -> None:
            with self._lock:
                if done.is_set():
                    return
                done.set()
                left = self._open.get(key, 1) - 1
                if left > 0:
                    self._open[key] = left
                else:
                    self._open.pop(key, None)

        return give_back

    def open(self, key: int) -> int:
        with self._lock:
            return self._open.get(key, 0)


@dataclass
class AppContext:
    """Everything the handlers use, built once in `create_app`."""

    settings: Settings
    ingest: Ingest
    engine: AlertEngine | None  # None: alerting is off in this process (alert routes answer 503)
    tokens: TokenStore
    tz: ZoneInfo
    kinds: dict[str, KindSpec]
    api_metrics: ApiMetrics  # /metrics and the SSE gauge: create_app always makes one
    limits: Limits = field(default_factory=Limits)
    closing: threading.Event = field(default_factory=threading.Event)  # set → SSE streams end
    streams: StreamLeases = field(default_factory=StreamLeases)
    district_sites: dict[str, frozenset[str]] = field(default_factory=dict)  # from the registry, at start

    def local_iso(self, ms: int | None) -> str | None:
        if ms is None:
            return None
        return datetime.fromtimestamp(ms / 1000, self.tz).isoformat(timespec="seconds")


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


CtxDep = Annotated[AppContext, Depends(get_ctx)]

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` from CW_API_TOKENS")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="citywatch"'}


def current_principal(ctx: CtxDep,
                      creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token", headers=_CHALLENGE)
    who = ctx.tokens.lookup(creds.credentials)
    if who is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token",
                            headers={"WWW-Authenticate": 'Bearer realm="citywatch", error="invalid_token"'})
    return who


def require(role: Role):
    def check(who: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if who.role < role:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role.name} role or higher")
        return who

    check.__name__ = f"require_{role.name}"
    return check


ViewerDep = Annotated[Principal, Depends(require(Role.viewer))]
OperatorDep = Annotated[Principal, Depends(require(Role.operator))]
AdminDep = Annotated[Principal, Depends(require(Role.admin))]


# -- district scope ------------------------------------------------------------------------
OUTSIDE = "this site is outside the districts of your token"


@dataclass(frozen=True, slots=True)
class Scope:
    """What a request's token may see: `allowed_sites` None = every site; else only these
    (the sites of the token's districts in the registry; possibly none). Every /v1 route
    takes it (tests/api/test_api_districts.py walks app.routes to make sure), and the rule
    is the same everywhere: a site asked for by name outside the scope is 403; lists are
    narrowed to the scope."""

    principal: Principal
    districts: frozenset[str] | None = None
    allowed_sites: frozenset[str] | None = None

    @property
    def limited(self) -> bool:
        return self.allowed_sites is not None

    def allows(self, site: str | None) -> bool:
        return self.allowed_sites is None or (site is not None and site in self.allowed_sites)

    def check_site(self, site: str | None) -> None:
        """403 when this site is outside the scope (an alert's or letter's site, or `site=`)."""
        if not self.allows(site):
            raise HTTPException(status.HTTP_403_FORBIDDEN, OUTSIDE)

    def sites_for(self, site: str | None) -> frozenset[str] | None:
        """The sites a query may touch: None = no site filter (unlimited token, no `site=`);
        `{site}` when one allowed site is asked for; else the whole scope (maybe empty:
        answer with nothing, without asking InfluxDB). 403 for a site outside."""
        if site is not None:
            self.check_site(site)
            return frozenset({site})
        return self.allowed_sites

    def require_unlimited(self, what: str) -> None:
        """For actions that reach every district (replaying all dead letters, changing a rule)."""
        if self.limited:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"{what} affects every district; "
                                "it needs a token that is not limited to districts")


def current_scope(ctx: CtxDep, who: Annotated[Principal, Depends(current_principal)]) -> Scope:
    if who.districts is None:
        return Scope(who)
    sites = frozenset().union(*(ctx.district_sites.get(d, frozenset()) for d in who.districts))
    return Scope(who, who.districts, sites)


ScopeDep = Annotated[Scope, Depends(current_scope)]


def engine_of(ctx: CtxDep) -> Any:
    if ctx.engine is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "alerting is not running in this process")
    return ctx.engine


EngineDep = Annotated[Any, Depends(engine_of)]


# -- validated identifiers ------------------------------------------------------------------
def invalid(loc: str, msg: str, value: Any = None) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors. The offending value is not echoed
    (it may be an injection attempt or a secret pasted by mistake)."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         [{"loc": ["query", loc], "msg": msg, "type": "value_error"}])


def _id_query(description: str, example: str, required: bool = False):
    return Query(description=description, pattern=ID_PATTERN, min_length=1, max_length=64, examples=[example])


def checked_id(name: str, value: str | None) -> str | None:
    if value is not None and not is_identifier(value):
        raise invalid(name, "must match [A-Za-z0-9_-]{1,64}")
    return value


def kind_of(ctx: CtxDep, kind: Annotated[str, _id_query("device kind, from citywatch/kinds.yaml", "dust",
                                                           required=True)]) -> KindSpec:
    checked_id("kind", kind)
    spec = ctx.kinds.get(kind)
    if spec is None:
        raise invalid("kind", f"unknown kind; known: {', '.join(sorted(ctx.kinds))}")
    return spec


def optional_kind(ctx: CtxDep, kind: Annotated[str | None, _id_query("device kind (all when omitted)",
                                                                    "dust")] = None) -> KindSpec | None:
    if kind is None:
        return None
    return kind_of(ctx, kind)


def site_param(site: Annotated[str | None, _id_query("site id", "S0001")] = None) -> str | None:
    return checked_id("site", site)


def device_param(device: Annotated[str | None, _id_query("device id", "D00001")] = None) -> str | None:
    return checked_id("device", device)


KindDep = Annotated[KindSpec, Depends(kind_of)]
OptionalKindDep = Annotated[KindSpec | None, Depends(optional_kind)]
SiteDep = Annotated[str | None, Depends(site_param)]
DeviceDep = Annotated[str | None, Depends(device_param)]


def parse_time(name: str, text: str) -> datetime:
    """RFC 3339 with an explicit offset (or Z), strictly; returns an aware UTC datetime."""
    import re

    if len(text) > 40 or not re.fullmatch(
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|z|[+-]\d{2}:\d{2})", text):
        raise invalid(name, "must be RFC 3339 with an offset, e.g. 2026-11-27T08:00:00+08:00")
    try:
        t = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise invalid(name, "is not a valid date-time") from None
    if t.year < 2000 or t.year > 2200:
        raise invalid(name, "is out of range (2000-2200)")
    return t.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


__all__ = ["AdminDep", "AppContext", "CtxDep", "DeviceDep", "EngineDep", "KindDep", "Limits", "OperatorDep",
           "OptionalKindDep", "Scope", "ScopeDep", "SiteDep", "ViewerDep", "current_scope", "invalid", "parse_time",
           "timedelta", "utc_now"]
