"""Bearer tokens and roles: 401 without a valid token, 403 for a too-low role."""

from __future__ import annotations

import pytest
from conftest import TOKENS, auth

from api.auth import Role, TokenStore
from citywatch.errors import ConfigError

# (method, path, minimum role); bodies are valid so that only auth decides.
ENDPOINTS = [
    ("GET", "/v1/me", "viewer"),
    ("GET", "/v1/readings/latest?kind=dust", "viewer"),
    ("GET", "/v1/series?kind=dust&field=pm10", "viewer"),
    ("GET", "/v1/alerts", "viewer"),
    ("GET", "/v1/rules", "viewer"),
    ("GET", "/v1/compliance/six100", "viewer"),
    ("POST", "/v1/alerts/0123456789abcdef0123/ack", "operator"),
    ("GET", "/v1/deadletters", "operator"),
    ("PUT", "/v1/rules/dust_pm10_10min", "admin"),
    ("POST", "/v1/deadletters/replay", "admin"),
]
ORDER = ["viewer", "operator", "admin"]


def _call(client, method, path, headers):
    body = {"dry_run": True} if path.endswith("replay") else ({"note": "x"} if "ack" in path else None)
    if method == "PUT":
        body = client.get("/v1/rules/dust_pm10_10min", headers=auth("admin")).json()
    return client.request(method, path, headers=headers, json=body)


@pytest.mark.parametrize("method,path,minimum", ENDPOINTS)
def test_roles(client, method, path, minimum):
    r = _call(client, method, path, {})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = _call(client, method, path, {"Authorization": "Bearer not-a-valid-token"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    r = _call(client, method, path, {"Authorization": f"Basic {TOKENS['admin']}"})  # wrong scheme
    assert r.status_code == 401
    for role in ORDER:
        r = _call(client, method, path, auth(role))
        if ORDER.index(role) < ORDER.index(minimum):
            assert r.status_code == 403, (role, r.text)
        else:
            assert r.status_code not in (401, 403), (role, r.status_code, r.text)
        assert not any(t in r.text for t in TOKENS.values())  # never echoed


def test_public_endpoints_need_no_token(client):
    for path in ("/health", "/metrics", "/", "/openapi.json", "/static/app.js"):
        assert client.get(path).status_code == 200, path


def test_me_names_the_principal_not_the_token(client):
    assert client.get("/v1/me", headers=auth("operator")).json() == {"name": "王工", "role": "operator",
                                                                      "tz": "Asia/Shanghai", "districts": None}
    assert client.get("/v1/me", headers=auth("viewer")).json()["name"] == "viewer#1"


def test_token_parsing():
    s = TokenStore.parse(" aaaaaaaa1=viewer ,bbbbbbbb2=admin:张三,")
    assert s.lookup("aaaaaaaa1").role is Role.viewer
    assert s.lookup("bbbbbbbb2").name == "张三"
    assert s.lookup("aaaaaaaa") is None and s.lookup("") is None
    for bad in ("", "secret-token=root", "short=admin", "secret-token", "secret-tok=admin,secret-tok=viewer"):
        with pytest.raises(ConfigError) as exc:
            TokenStore.parse(bad)
        assert "secret" not in str(exc.value)  # errors name the pair's position, never the token
