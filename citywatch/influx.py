"""InfluxDB access: line-protocol writes (v1 `/write` or v2 `/api/v2/write`), InfluxQL
queries and database/bucket creation.

Writes go through httpx rather than influxdb-client's WriteApi because ours must never
drop a batch: the client's batching API discards after its retry budget, and its async
API neither batches nor retries. Each write returns a `WriteResult`, sorted once by
status code into ok / rejected (bad data: isolate and dead-letter) / too large (split) /
retry (everything else); the caller owns retries. influxdb-client is used where it
helps: creating a v2 bucket.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import httpx

from citywatch.logs import redact_url
from citywatch.net import is_loopback
from citywatch.errors import ConfigError, InfluxError
from citywatch.settings import Settings
from citywatch.topics import is_identifier


class WriteOutcome(Enum):
    """What InfluxDB's answer to one write means for the writer (a decoded message's
    outcome is another thing: `ingest.types.Outcome`)."""

    OK = "ok"
    REJECTED = "rejected"  # the data is bad (400/422): retrying it as is cannot succeed
    TOO_LARGE = "too_large"  # 413: split the batch
    NO_DATABASE = "no_database"  # 404 database/bucket not found: create, then retry
    RETRY = "retry"  # 429, 5xx, 401/403 (credentials may be fixed), connection errors


@dataclass(frozen=True, slots=True)
class WriteResult:
    outcome: WriteOutcome
    status: int | None = None
    detail: str = ""
    retry_after_s: float | None = None


def _classify(status: int, body: str, headers: httpx.Headers) -> WriteResult:
    if status in (200, 204):
        return WriteResult(WriteOutcome.OK, status)
    detail = body[:500]
    if status == 404 or "database not found" in body or "bucket" in body and "not found" in body:
        return WriteResult(WriteOutcome.NO_DATABASE, status, detail)
    if status in (400, 422):
        return WriteResult(WriteOutcome.REJECTED, status, detail)
    if status == 413:
        return WriteResult(WriteOutcome.TOO_LARGE, status, detail)
    retry_after = headers.get("Retry-After")
    try:
        ra = float(retry_after) if retry_after else None
    except ValueError:
        ra = None
    return WriteResult(WriteOutcome.RETRY, status, detail, ra)


class InfluxClient:
    """One InfluxDB endpoint in either dialect; async, one connection pool."""

    def __init__(self, settings: Settings, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not is_identifier(settings.influx_database):
            raise ConfigError("CW_INFLUX_DATABASE must match [A-Za-z0-9_-]{1,64}")
        self.settings = settings
        self.api = settings.influx_api
        loopback = is_loopback(urlsplit(settings.influx_url).hostname)
        self.gzip = settings.influx_gzip if settings.influx_gzip is not None else not loopback
        self.database = settings.influx_database
        headers: dict[str, str] = {}
        auth: httpx.Auth | None = None
        token = settings.influx_token.get_secret_value() if settings.influx_token else None
        if token:
            headers["Authorization"] = f"Token {token}"
        elif settings.influx_user and settings.influx_password:
            auth = httpx.BasicAuth(settings.influx_user, settings.influx_password.get_secret_value())
        if self.api == "v2":
            if not token:
                raise ConfigError("CW_INFLUX_API=v2 needs CW_INFLUX_TOKEN")
            if not settings.influx_org:
                raise ConfigError("CW_INFLUX_API=v2 needs CW_INFLUX_ORG")
            self._write_path = "/api/v2/write"
            self._write_params = {"org": settings.influx_org, "bucket": self.database, "precision": "ms"}
        else:
            self._write_path = "/write"
            self._write_params = {"db": self.database, "precision": "ms"}
        self._http = httpx.AsyncClient(base_url=settings.influx_url.rstrip("/"), headers=headers, auth=auth,
                                       timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def write(self, body: bytes, *, compressed: bool = True) -> WriteResult:
        """POST newline-separated line protocol (ms precision). Never raises for HTTP or
        network failures: they come back as a RETRY result."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if compressed:
            headers["Content-Encoding"] = "gzip"
        try:
            resp = await self._http.post(self._write_path, params=self._write_params, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return WriteResult(WriteOutcome.RETRY, None, f"{type(exc).__name__}: {exc}")
        return _classify(resp.status_code, resp.text, resp.headers)

    async def ping(self) -> bool:
        try:
            resp = await self._http.get("/ping", timeout=2.0)
            return resp.status_code in (200, 204)
        except httpx.HTTPError:
            return False

    async def ensure_database(self) -> None:
        """Create the database (v1) or bucket (v2) when missing; ConfigError when the
        credentials do not allow it, InfluxError when the server cannot be reached."""
        if self.api == "v1":
            try:
                resp = await self._http.post("/query", data={"q": f'CREATE DATABASE "{self.database}"'})
            except httpx.HTTPError as exc:
                raise InfluxError(f"InfluxDB at {redact_url(self.settings.influx_url)} unreachable: {exc}") from exc
            if resp.status_code in (401, 403):
                raise ConfigError(
                    f"InfluxDB refused CREATE DATABASE {self.database} ({resp.status_code}): create it or use "
                    "credentials with admin rights")
            if resp.status_code >= 400:
                raise InfluxError(f"CREATE DATABASE failed: {resp.status_code} {resp.text[:200]}",
                                  status=resp.status_code)
            return
        import asyncio

        await asyncio.to_thread(self._ensure_bucket_v2)

    def _ensure_bucket_v2(self) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.rest import ApiException

        s = self.settings
        assert s.influx_token is not None and s.influx_org is not None  # v2 needs both: checked by Settings
        with InfluxDBClient(url=s.influx_url, token=s.influx_token.get_secret_value(), org=s.influx_org) as client:
            buckets = client.buckets_api()
            creating = False
            try:
                if buckets.find_bucket_by_name(self.database) is not None:
                    return
                orgs = client.organizations_api().find_organizations(org=s.influx_org)
                if not orgs:
                    # A token scoped to one bucket (docker-compose's influxdb-init) can see
                    # neither other buckets nor the organisation: say both possibilities.
                    raise ConfigError(
                        f"InfluxDB bucket {self.database!r} is not visible to CW_INFLUX_TOKEN and organisation "
                        f"{s.influx_org!r} is unknown or not visible to it: create the bucket, check "
                        "CW_INFLUX_ORG / CW_INFLUX_DATABASE, or use a token that may read them")
                creating = True
                buckets.create_bucket(bucket_name=self.database, org_id=orgs[0].id)
            except ApiException as exc:
                if exc.status == 401 and not creating:
                    raise ConfigError(
                        "InfluxDB refused CW_INFLUX_TOKEN (401 unauthorized): the token is wrong, revoked, or "
                        f"may not use bucket {self.database!r}") from None
                if exc.status in (401, 403):
                    raise ConfigError(
                        f"the InfluxDB token may not create bucket {self.database!r} ({exc.status}): create it, or "
                        "use a token with write access to buckets") from None
                if exc.status == 404:
                    # Servers that speak only the write API (3.x, VictoriaMetrics): nothing to create.
                    return
                raise InfluxError(f"bucket check failed: {exc.status} {exc.reason}", status=exc.status) from exc
            except Exception as exc:  # urllib3 connection errors
                if isinstance(exc, ConfigError):
                    raise
                raise InfluxError(f"InfluxDB at {redact_url(s.influx_url)} unreachable: {type(exc).__name__}") from exc

    async def query(self, influxql: str, *, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL through `/query` (1.x, and 2.x's v1 compatibility API); return the
        series of the first statement as a list of {"name", "tags", "columns", "values"}."""
        qp: dict[str, Any] = {"db": self.database, "q": influxql, "epoch": "ms"}  # JSON both ways: Any
        if params:
            qp["params"] = json.dumps(params)
        try:
            resp = await self._http.get("/query", params=qp)
        except httpx.HTTPError as exc:
            raise InfluxError(f"InfluxDB query failed: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise InfluxError(f"InfluxDB query failed: {resp.status_code} {resp.text[:200]}", status=resp.status_code)
        doc = resp.json()
        results = doc.get("results") or [{}]
        if "error" in results[0]:
            raise InfluxError(f"InfluxQL error: {results[0]['error']}", retryable=False)
        series: list[dict[str, Any]] = results[0].get("series", [])  # InfluxDB's JSON, checked above
        return series

    async def count(self, measurement: str, field: str) -> int:
        """Points in `measurement` that have `field` (used by tests and the benchmark)."""
        if not (is_identifier(measurement) and is_identifier(field)):
            raise ValueError("measurement and field must be identifiers")
        series = await self.query(f'SELECT count("{field}") FROM "{measurement}"')
        return int(series[0]["values"][0][1]) if series else 0
