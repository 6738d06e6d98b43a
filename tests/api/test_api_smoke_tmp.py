from conftest import auth, decode_scenario, feed

def test_smoke(stack, client):
    r, e, lines = decode_scenario("dust-episode")
    stack.write_lines(lines)
    feed(stack.engine, r, e)
    print(client.get("/health").json())
    x = client.get("/v1/readings/latest", params={"kind": "dust"}, headers=auth("viewer"))
    print(x.status_code, x.text[:500])
    x = client.get("/v1/series", params={"kind": "dust", "field": "pm10", "start": "2026-11-27T10:00:00+08:00", "end": "2026-11-27T11:00:00+08:00", "every": "5m"}, headers=auth("viewer"))
    print(x.status_code, x.text[:800])
    x = client.get("/v1/alerts", headers=auth("viewer"))
    print(x.status_code, x.text[:800])
    x = client.get("/v1/compliance/six100", params={"date": "2026-11-27"}, headers=auth("viewer"))
    print(x.status_code, x.text[:3000])
    print(stack.queries)
