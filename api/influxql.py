"""The only place where InfluxQL text is assembled.

Rules: identifiers (measurement, field, tag keys) are re-checked against the identifier
pattern and double-quoted; tag *values* from requests never enter the text — they are
InfluxDB bound parameters (`$site`); times and durations are integers we computed. A
caller that passes anything else gets ValueError, which is a bug (a 500), never a query.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from fastapi import HTTPException, status

from citywatch.errors import InfluxError
from citywatch.topics import is_identifier

log = logging.getLogger("citywatch.api")


def ident(name: str) -> str:
    if not isinstance(name, str) or not is_identifier(name):
        raise ValueError("not an identifier")  # unreachable for validated input
    return f'"{name}"'


def ms(value: int) -> str:
    return f"{int(value)}ms"


def where(start_ms: int | None, end_ms: int | None, tags: dict[str, str | None], *,
          since: str | None = None, sites: Collection[str] | None = None) -> tuple[str, dict[str, str]]:
    """`WHERE` clause and its bound parameters; None tag values are left out. `sites` (a
    token's district scope, `Scope.sites_for`) adds `("site" = $site_0 OR ...)`, each a bound
    parameter; an empty collection is a bug (the caller answers without a query)."""
    parts: list[str] = []
    params: dict[str, str] = {}
    if since is not None:
        parts.append(f"time > now() - {since}")
    if start_ms is not None:
        parts.append(f"time >= {ms(start_ms)}")
    if end_ms is not None:
        parts.append(f"time < {ms(end_ms)}")
    for key, value in tags.items():
        if value is None:
            continue
        if not is_identifier(value):
            raise ValueError("tag value is not an identifier")
        parts.append(f"{ident(key)} = ${key}")
        params[key] = value
    if sites is not None:
        if not sites:
            raise ValueError("an empty site scope needs no query")
        alts = []
        for i, value in enumerate(sorted(sites)):
            if not is_identifier(value):
                raise ValueError("site is not an identifier")
            alts.append(f'"site" = $site_{i}')
            params[f"site_{i}"] = value
        parts.append("(" + " OR ".join(alts) + ")")
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


async def run(influx: Any, text: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Query InfluxDB; its errors become 503 without internal detail (logged instead)."""
    try:
        return await influx.query(text, params=params or None)
    except InfluxError as exc:
        log.warning("InfluxDB query failed: %s", exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "InfluxDB is unavailable or refused the query; "
                            "readings are still being spooled") from None


def rows(series: dict[str, Any]) -> list[dict[str, Any]]:
    cols = series.get("columns", [])
    return [dict(zip(cols, v)) for v in series.get("values", [])]
