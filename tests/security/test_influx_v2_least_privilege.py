"""Issue 11, item 3: citywatch's InfluxDB 2 token may read and write its bucket, nothing else.

Against a local server that authorises as InfluxDB 2 documents (influx2_server.py:
token, org and bucket checked; 401/403/404 as InfluxDB 2 answers), with the token the
shipped compose init step creates (its `influx auth create` flags, read from
deploy/influxdb/citywatch-token.sh). The real InfluxDB 2 is not installed here (Debian
ships 1.6); the storage half of the v2 path is tested against victoria-metrics in
tests/integration/test_influx_v2.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import httpx
import pytest

from citywatch.errors import ConfigError
from citywatch.influx import InfluxClient, Outcome
from citywatch.settings import Settings
from tests.security.influx2_server import Influx2, Influx2Server, Permission, auth_create_flags, cli_permissions
from tests.support import Publisher, ServiceProcess, readings, service_env

ROOT = Path(__file__).resolve().parents[2]
INIT_SCRIPT = ROOT / "deploy" / "influxdb" / "citywatch-token.sh"
ORG, BUCKET = "citywatch", "citywatch"
LINE = b"dust,site=S0001,device=D00001 pm10=61.5 1764400000000"


@pytest.fixture
def influx2():
    db = Influx2()
    org_id = db.add_org(ORG)
    bucket_id = db.add_bucket(ORG, BUCKET)
    other_id = db.add_bucket(ORG, "finance")
    flags = auth_create_flags(INIT_SCRIPT.read_text())
    # The script passes the bucket's id as "$bucket_id": bind it to the bucket here.
    flags = {k: [bucket_id if v == "$bucket_id" else v for v in vs] for k, vs in flags.items()}
    tokens = {
        "citywatch": db.add_token(cli_permissions(flags, org_id)),
        "read_only": db.add_token([Permission("read", "buckets", org_id, bucket_id)]),
        "other_bucket": db.add_token([Permission(a, "buckets", org_id, other_id) for a in ("read", "write")]),
        "admin": db.add_token(cli_permissions({"--all-access": []}, org_id)),
    }
    with Influx2Server(db) as server:
        server.tokens = tokens  # type: ignore[attr-defined]
        yield server


def _settings(server: Influx2Server, token: str | None, **kw) -> Settings:
    values = {"influx_url": server.url, "influx_api": "v2", "influx_org": ORG, "influx_database": BUCKET,
              "influx_token": token, **kw}
    return Settings(**values)


def _write(url: str, *, token: str | None, org: str = ORG, bucket: str = BUCKET, scheme: str = "Token") -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return httpx.post(f"{url}/api/v2/write", params={"org": org, "bucket": bucket, "precision": "ms"},
                      content=LINE, headers=headers)


def test_the_server_authorises_as_influxdb2_documents(influx2):
    t = influx2.tokens
    assert _write(influx2.url, token=None).status_code == 401
    assert _write(influx2.url, token="not-a-token").status_code == 401
    assert _write(influx2.url, token=t["citywatch"], scheme="Basic").status_code == 401
    r = _write(influx2.url, token=t["citywatch"], org="nowhere")
    assert r.status_code == 404 and "organization" in r.json()["message"]
    r = _write(influx2.url, token=t["citywatch"], bucket="nothing")
    assert r.status_code == 404 and "bucket" in r.json()["message"]
    r = _write(influx2.url, token=t["read_only"])
    assert r.status_code == 403 and r.json() == {"code": "forbidden", "message": "insufficient permissions for write"}
    assert _write(influx2.url, token=t["other_bucket"]).status_code == 403
    assert _write(influx2.url, token=t["citywatch"]).status_code == 204
    assert _write(influx2.url, token=t["admin"], scheme="Bearer").status_code == 204
    assert influx2.db.stored(ORG, BUCKET) == [LINE, LINE]


def test_the_init_steps_token_reaches_its_bucket_and_nothing_else(influx2):
    t = influx2.tokens["citywatch"]
    assert _write(influx2.url, token=t, bucket="finance").status_code == 403
    listed = httpx.get(f"{influx2.url}/api/v2/buckets", headers={"Authorization": f"Token {t}"}).json()["buckets"]
    assert [b["name"] for b in listed] == [BUCKET]
    orgs = httpx.get(f"{influx2.url}/api/v2/orgs", headers={"Authorization": f"Token {t}"}).json()["orgs"]
    assert orgs == []
    create = httpx.post(f"{influx2.url}/api/v2/buckets", headers={"Authorization": f"Token {t}"},
                        json={"name": "mine", "orgID": influx2.db.orgs[ORG]})
    assert create.status_code == 401 and "is unauthorized" in create.json()["message"]


def test_citywatch_writes_and_finds_its_bucket_with_the_least_privilege_token(influx2):
    async def run():
        client = InfluxClient(_settings(influx2, influx2.tokens["citywatch"]))
        try:
            await client.ensure_database()  # finds the bucket; creates nothing
            plain = await client.write(LINE + b"\n", compressed=False)
            packed = await client.write(gzip.compress(LINE.replace(b"61.5", b"62.5") + b"\n"), compressed=True)
        finally:
            await client.aclose()
        return plain, packed

    plain, packed = asyncio.run(run())
    assert plain.outcome is Outcome.OK and packed.outcome is Outcome.OK
    assert influx2.db.stored(ORG, BUCKET) == [LINE, LINE.replace(b"61.5", b"62.5")]
    assert len(influx2.db.buckets) == 2, "no bucket was created"
    assert all(with_auth for _, path, with_auth in influx2.requests if path.startswith("/api/v2/"))


def test_a_wrong_token_fails_clearly_and_is_never_quoted(influx2):
    wrong = "wrong-token-0123456789abcdef"

    async def run():
        client = InfluxClient(_settings(influx2, wrong))
        try:
            with pytest.raises(ConfigError) as bucket_error:
                await client.ensure_database()
            result = await client.write(LINE + b"\n", compressed=False)
        finally:
            await client.aclose()
        return str(bucket_error.value), result

    message, result = asyncio.run(run())
    assert "CW_INFLUX_TOKEN" in message and "401" in message and wrong not in message
    assert result.outcome is Outcome.RETRY and result.status == 401  # kept in the spool, retried
    assert influx2.db.stored(ORG, BUCKET) == []


def test_a_token_that_may_only_read_is_refused_writes(influx2):
    async def run():
        client = InfluxClient(_settings(influx2, influx2.tokens["read_only"]))
        try:
            await client.ensure_database()  # it can see the bucket
            return await client.write(LINE + b"\n", compressed=False)
        finally:
            await client.aclose()

    result = asyncio.run(run())
    assert result.outcome is Outcome.RETRY and result.status == 403
    assert "insufficient permissions for write" in result.detail


def test_a_bucket_the_token_cannot_see_is_named_in_the_error(influx2):
    async def run():
        client = InfluxClient(_settings(influx2, influx2.tokens["citywatch"], influx_database="typo"))
        try:
            await client.ensure_database()
        finally:
            await client.aclose()

    with pytest.raises(ConfigError, match="bucket 'typo' is not visible to CW_INFLUX_TOKEN"):
        asyncio.run(run())


@pytest.mark.integration
def test_the_service_with_a_wrong_token_keeps_everything_then_delivers_with_the_right_one(influx2, mosquitto,
                                                                                           tmp_path):
    wrong = "wrong-token-0123456789abcdef"
    token_file = tmp_path / "influx-token"
    token_file.write_text(wrong + "\n")
    env = service_env(mqtt_url=mosquitto.url, influx_url=influx2.url, data_dir=tmp_path / "cw", database=BUCKET,
                      influx_api="v2", influx_org=ORG, influx_token_file=str(token_file), alerts_enabled="false")
    svc = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        svc.wait_log("connected to broker", timeout=30)
        pub = Publisher(mosquitto.port, "pub-influx2")
        pub.publish_all(readings(5, 10))
        pub.close()
        svc.wait_log("check CW_INFLUX_TOKEN", timeout=30)
        assert "InfluxDB refused CW_INFLUX_TOKEN (401 unauthorized)" in svc.log()
        assert influx2.db.stored(ORG, BUCKET) == []
        assert svc.stop() == 0
        assert wrong not in svc.log(), "the token must never be logged"
        token_file.write_text(influx2.tokens["citywatch"] + "\n")
        svc.start()
        deadline = time.monotonic() + 60
        while len(influx2.db.stored(ORG, BUCKET)) < 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        stored = influx2.db.stored(ORG, BUCKET)
        assert len({line.rsplit(b" ", 1)[1] + line.split(b",device=")[1][:6] for line in stored}) == 50
        assert all(line.startswith(b"dust,") for line in stored)
    finally:
        svc.stop()
    assert influx2.tokens["citywatch"] not in svc.log()
