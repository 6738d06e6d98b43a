"""/health, /metrics, /openapi.json, the dashboard's static files."""

from __future__ import annotations

from conftest import auth


def test_health(client, stack):
    doc = client.get("/health").json()
    assert doc == {"status": "ok", "mqtt": "disabled", "influx": "ok", "spool_backlog": 0, "writer": "ok",
                   "alerts": "running", "intake": "running", "disk_free_bytes": None,
                   "storage": {"spool": "ok", "deadletters": "ok"}}
    stack.ingest.writer.healthy = False
    assert client.get("/health").json()["status"] == "degraded"


def test_health_shows_a_disk_pause_and_a_failing_store(client, stack):
    stack.ingest.disk.check()
    doc = client.get("/health").json()
    assert doc["status"] == "ok" and doc["intake"] == "running" and doc["disk_free_bytes"] > 0
    stack.ingest.committer.pause("disk nearly full")
    stack.ingest.deadletters.failing = "database or disk is full"
    doc = client.get("/health").json()
    assert doc["status"] == "degraded" and doc["intake"] == "paused"
    assert doc["storage"]["deadletters"] == "failing: database or disk is full"


def test_health_influx_down(client, stack, monkeypatch):
    async def down():
        return False

    monkeypatch.setattr(stack.ingest.influx, "ping", down)
    doc = client.get("/health").json()
    assert doc["status"] == "degraded" and doc["influx"] == "unreachable"


def test_metrics(client):
    client.get("/v1/alerts", headers=auth("viewer"))
    client.get("/v1/alerts")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "citywatch_spool_backlog" in r.text  # the ingest registry
    assert 'citywatch_api_requests_total{method="GET",route="/v1/alerts",status="200"} 1.0' in r.text
    assert "citywatch_api_auth_failures_total 1.0" in r.text


def test_openapi_documents_everything(client):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for p in ("/health", "/metrics", "/v1/readings/latest", "/v1/series", "/v1/alerts", "/v1/alerts/{alert_id}/ack",
              "/v1/alerts/stream", "/v1/rules", "/v1/rules/{rule_id}", "/v1/compliance/six100", "/v1/deadletters",
              "/v1/deadletters/replay", "/"):
        assert p in paths, p
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    site = next(p for p in paths["/v1/series"]["get"]["parameters"] if p["name"] == "site")
    assert site["schema"]["anyOf"][0]["pattern"] == "^[A-Za-z0-9_-]{1,64}$"
    assert "examples" in doc["components"]["schemas"]["Alert"]


def test_dashboard_served_offline(client):
    r = client.get("/")
    assert r.status_code == 200 and 'lang="zh-CN"' in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no CDN
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for path in ("/static/app.js", "/static/style.css", "/static/vendor/uplot/uPlot.iife.min.js",
                 "/static/vendor/uplot/uPlot.min.css", "/static/vendor/uplot/LICENSE"):
        assert client.get(path).status_code == 200, path
