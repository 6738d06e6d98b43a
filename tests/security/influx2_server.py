"""A local HTTP server that authorises like InfluxDB 2 (OSS 2.7), for the v2 write path.

Neither Debian's InfluxDB (1.6) nor victoria-metrics checks org, bucket or token, so a
client that sent no token at all would pass against them. This server holds orgs,
buckets and tokens with InfluxDB 2's permission model (action read/write on a resource
type, optionally one org and one resource id) and answers as InfluxDB 2 documents:

  /api/v2/write   401 {"code":"unauthorized"} when the Authorization header is missing,
                  malformed or names an unknown token; 404 {"code":"not found"} for an
                  unknown organization or bucket; 403 {"code":"forbidden","message":
                  "insufficient permissions for write"} for a token without write on
                  that bucket; 204 otherwise (gzip bodies accepted).
  /api/v2/buckets GET lists only the buckets the token may read; POST needs write on the
                  org's buckets, else 401 "write:orgs/<id>/buckets is unauthorized".
  /api/v2/orgs    lists only the organizations the token may read.
  /ping           204.

(docs.influxdata.com/influxdb/v2/write-data/troubleshoot/, /api/#tag/Write; 403 body
as InfluxDB 2 sends it, influxdata/influxdb#17942.) It is a conformance double for the
authorisation rules, not a database: it keeps the lines it accepted, per bucket.
"""

from __future__ import annotations

import gzip
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Permission:
    action: str  # "read" | "write"
    type: str  # "buckets" | "orgs" | ...
    org_id: str | None = None  # None: every org
    id: str | None = None  # None: every resource of the type

    def allows(self, action: str, type_: str, org_id: str, id_: str | None = None) -> bool:
        return (self.action == action and self.type == type_ and self.org_id in (None, org_id)
                and self.id in (None, id_))


def cli_permissions(flags: dict[str, list[str]], org_id: str) -> list[Permission]:
    """The permissions `influx auth create --org O <flags>` gives (influx CLI 2.7): the
    bucket-scoped flags become one permission each; any other permission flag is kept as
    an unscoped permission so that a test sees it."""
    perms = []
    for flag, values in flags.items():
        if flag in ("--read-bucket", "--write-bucket"):
            perms += [Permission(flag[2:].split("-")[0], "buckets", org_id, v) for v in values]
        elif flag.startswith(("--read-", "--write-")):
            action, type_ = flag[2:].split("-", 1)
            perms.append(Permission(action, type_, org_id))
        elif flag in ("--all-access", "--operator"):
            perms += [Permission(a, t) for a in ("read", "write") for t in ("buckets", "orgs", "users", "authorizations")]
    return perms


def _new_id() -> str:
    return secrets.token_hex(8)


@dataclass
class Influx2:
    orgs: dict[str, str] = field(default_factory=dict)  # name -> id
    buckets: dict[tuple[str, str], str] = field(default_factory=dict)  # (org id, name) -> id
    tokens: dict[str, list[Permission]] = field(default_factory=dict)
    lines: dict[str, list[bytes]] = field(default_factory=dict)  # bucket id -> accepted lines
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_org(self, name: str) -> str:
        self.orgs[name] = org_id = _new_id()
        return org_id

    def add_bucket(self, org: str, name: str) -> str:
        self.buckets[(self.orgs[org], name)] = bucket_id = _new_id()
        self.lines[bucket_id] = []
        return bucket_id

    def add_token(self, permissions: list[Permission]) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = list(permissions)
        return token

    def stored(self, org: str, bucket: str) -> list[bytes]:
        with self.lock:
            return list(self.lines[self.buckets[(self.orgs[org], bucket)]])

    def allowed(self, token: str, action: str, type_: str, org_id: str, id_: str | None = None) -> bool:
        return any(p.allows(action, type_, org_id, id_) for p in self.tokens.get(token, ()))


class _Handler(BaseHTTPRequestHandler):
    server: "Influx2Server"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, doc: dict | None = None) -> None:
        body = json.dumps(doc).encode() if doc is not None else b""
        self.send_response(status)
        if doc is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token(self) -> str | None:
        """The request's token if it is a known one (InfluxDB 2 takes `Token X` and `Bearer X`)."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme not in ("Token", "Bearer") or token not in self.server.db.tokens:
            self._send(401, {"code": "unauthorized", "message": "unauthorized access"})
            return None
        return token

    def _body(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        db = self.server.db
        self.server.requests.append(("GET", url.path, self.headers.get("Authorization") is not None))
        if url.path in ("/ping", "/health"):
            return self._send(204 if url.path == "/ping" else 200, None if url.path == "/ping" else {"status": "pass"})
        token = self._token()
        if token is None:
            return
        if url.path == "/api/v2/buckets":
            found = [{"id": bid, "name": name, "orgID": oid, "type": "user", "retentionRules": []}
                     for (oid, name), bid in db.buckets.items()
                     if ("name" not in q or q["name"] == name) and db.allowed(token, "read", "buckets", oid, bid)]
            return self._send(200, {"buckets": found, "links": {"self": "/api/v2/buckets"}})
        if url.path == "/api/v2/orgs":
            found = [{"id": oid, "name": name} for name, oid in db.orgs.items()
                     if ("org" not in q or q["org"] == name) and db.allowed(token, "read", "orgs", oid, oid)]
            return self._send(200, {"orgs": found, "links": {"self": "/api/v2/orgs"}})
        self._send(404, {"code": "not found", "message": "path not found"})

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        db = self.server.db
        self.server.requests.append(("POST", url.path, self.headers.get("Authorization") is not None))
        body = self._body()
        token = self._token()
        if token is None:
            return
        if url.path == "/api/v2/write":
            org = q.get("org")
            if not org:
                return self._send(400, {"code": "invalid", "message": "Please provide either orgID or org"})
            if org not in db.orgs:
                return self._send(404, {"code": "not found", "message": f'organization name "{org}" not found'})
            org_id = db.orgs[org]
            bucket_id = db.buckets.get((org_id, q.get("bucket", "")))
            if bucket_id is None:
                return self._send(404, {"code": "not found", "message": f'bucket "{q.get("bucket")}" not found'})
            if not db.allowed(token, "write", "buckets", org_id, bucket_id):
                return self._send(403, {"code": "forbidden", "message": "insufficient permissions for write"})
            with db.lock:
                db.lines[bucket_id].extend(line for line in body.split(b"\n") if line.strip())
            return self._send(204)
        if url.path == "/api/v2/buckets":
            doc = json.loads(body)
            org_id = doc.get("orgID", "")
            if not db.allowed(token, "write", "buckets", org_id):
                return self._send(401, {"code": "unauthorized", "message": f"write:orgs/{org_id}/buckets is unauthorized"})
            bucket_id = _new_id()
            db.buckets[(org_id, doc["name"])] = bucket_id
            db.lines[bucket_id] = []
            return self._send(201, {"id": bucket_id, "name": doc["name"], "orgID": org_id, "type": "user",
                                    "retentionRules": []})
        self._send(404, {"code": "not found", "message": "path not found"})


class Influx2Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, db: Influx2) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.db = db
        self.requests: list[tuple[str, str, bool]] = []
        self._thread = threading.Thread(target=self.serve_forever, name="influx2", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "Influx2Server":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def auth_create_flags(script: str) -> dict[str, list[str]]:
    """The flags of the `influx auth create` command in a shell script (continuation lines
    joined), e.g. {"--org": ["$INFLUX_ORG"], "--read-bucket": ["$bucket_id"], ...}."""
    import re
    import shlex

    joined = script.replace("\\\n", " ")
    # Commands only: at the start of a line or of a $( ... ), not inside a message.
    commands = [line for line in joined.splitlines() if re.search(r"(^|\$\()\s*influx auth create\b", line.strip())]
    assert len(commands) == 1, f"expected one `influx auth create`, found {len(commands)}"
    words = shlex.split(commands[0].split("influx auth create", 1)[1].split(")", 1)[0])
    flags: dict[str, list[str]] = {}
    boolean = {"--json", "--hide-headers", "--all-access", "--operator"}
    i = 0
    while i < len(words):
        word = words[i]
        assert word.startswith("-"), f"unexpected word {word!r} in influx auth create"
        if word in boolean or i + 1 == len(words) or words[i + 1].startswith("-"):
            flags.setdefault(word, [])
            i += 1
        else:
            flags.setdefault(word, []).append(words[i + 1])
            i += 2
    return flags
