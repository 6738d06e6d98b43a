"""The one settings object, read from `CW_*` environment variables (docs/contract.md §2).

Built once in the command-line entry point and passed down; nothing else reads the
environment. A TOML file named by `CW_CONFIG` may mirror the variables (lower-case keys
without the prefix); the environment wins.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from citywatch.errors import ConfigError
from citywatch.logs import redact_url

# A webhook's HMAC key: 32 bytes is SHA-256's block-size half and its output size (RFC 2104
# recommends at least the output length); `openssl rand -hex 32` makes one.
MIN_WEBHOOK_SECRET_BYTES = 32
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CW_", extra="ignore", frozen=True)

    mqtt_url: SecretStr = SecretStr("mqtt://127.0.0.1:1883")
    mqtt_client_id: str = "citywatch-ingest"
    # PEM CA certificate(s) that the broker's certificate must chain to (mqtts:// only);
    # unset = the system's trust store. scripts/make-certs.sh makes a private CA.
    mqtt_ca_file: Path | None = None
    influx_url: str = "http://127.0.0.1:8086"
    influx_api: Literal["v1", "v2"] = "v1"
    influx_database: str = "citywatch"
    influx_org: str | None = None
    influx_token: SecretStr | None = None
    # A file holding the token (docker-compose's influxdb-init writes one); used when
    # CW_INFLUX_TOKEN is unset, so the token never sits in the environment or compose file.
    influx_token_file: Path | None = None
    influx_user: str | None = None
    influx_password: SecretStr | None = None
    data_dir: Path = Path("./var/citywatch")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_tokens: SecretStr | None = None
    # HTTPS for the API (uvicorn's ssl_certfile / ssl_keyfile), both or neither.
    api_tls_cert: Path | None = None
    api_tls_key: Path | None = None
    # HTTP limits (docs in api/README.md): connections at once (uvicorn limit_concurrency;
    # beyond it a request gets 503), idle keep-alive, how long and how much a request's
    # header may take, connections still sending their header (the oldest is closed beyond
    # it: a slowloris flood cannot hold the server), SSE streams per token (429 beyond it).
    api_max_connections: int = Field(default=1000, ge=1, le=100_000)
    api_keep_alive_s: int = Field(default=5, ge=1, le=3600)
    api_header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    api_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    api_max_incomplete_requests: int = Field(default=100, ge=1, le=100_000)
    api_sse_per_token: int = Field(default=8, ge=1, le=10_000)
    tz: str = "Asia/Shanghai"
    devices_file: Path | None = None
    rules_dir: Path | None = None
    # Regional rule pack overlaid on the shipped rules (alerts/rules/packs/<name>/):
    # default (the seed city's) | hebei | tianjin | shanghai | taiyuan | beijing.
    rule_pack: str = "default"
    hj212_listen: str | None = None
    # The HJ 212 port on a hostile network (ingest/hj212/README.md "On a hostile network").
    hj212_open: bool = False  # no device registry: accept any MN without a password, on purpose
    hj212_max_connections: int = Field(default=2000, ge=1, le=100_000)
    hj212_max_per_address: int = Field(default=256, ge=1, le=100_000)  # IPv6: per /64
    hj212_auth_timeout_s: float = Field(default=60.0, gt=0, le=86400)  # connect → first logged-in frame
    hj212_idle_timeout_s: float = Field(default=900.0, gt=0, le=86400)
    hj212_lockout_after: int = Field(default=10, ge=1, le=10_000)  # failed logins per MN / address
    hj212_backoff_after: int = Field(default=3, ge=0, le=10_000)  # failures answered at once
    hj212_lockout_s: float = Field(default=900.0, gt=0, le=7 * 86400)
    hj212_deadletter_rate: float = Field(default=1.0, gt=0, le=100_000)  # per s per unauthenticated address
    hj212_deadletter_burst: int = Field(default=20, ge=1, le=1_000_000)
    # MQTT ingest processes sharing one subscription ($share/citywatch/...): paho parses
    # packets in Python, so one process is one core. Opt-in: mosquitto 2.0 does not restore
    # shared subscriptions from persistence, so after a broker restart it drops what is
    # published before the workers subscribe again (see docs/scaling.md). 0 = one per core.
    ingest_workers: int = Field(default=1, ge=0, le=64)
    # With one ingest worker, MQTT ingest (paho, decode, spool, acks, InfluxDB writer) still
    # runs in a child process of its own, with the plain session named by CW_MQTT_CLIENT_ID,
    # so that it and the alert engine (with the API and the HJ 212 gateway, in the main
    # process) each get a core. false: everything in one process.
    ingest_process: bool = True
    worker_index: int | None = None  # set inside an ingest worker process; not for users
    worker_shared: bool = True  # inside a worker: in the shared subscription (else the plain session)
    alerts_enabled: bool = True  # CW_ALERTS_ENABLED=false: ingest only (e.g. a second ingest node)
    alert_webhook_url: str | None = None
    alert_webhook_secret: SecretStr | None = None
    routes_file: Path | None = None  # alert routing (alerts/README.md, "Routing"); unset = as before
    dashboard_url: str | None = None  # link in routed messages; unset = http://CW_API_HOST:CW_API_PORT/

    # Tuning knobs beyond the contract; the defaults suit a 2-core machine.
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    max_future_s: float = Field(default=300.0, ge=0)
    commit_interval_ms: float = Field(default=20.0, gt=0)
    commit_max_messages: int = Field(default=5000, ge=1)
    mqtt_receive_maximum: int = Field(default=20000, ge=1, le=65535)
    write_batch_lines: int = Field(default=5000, ge=1)
    # gzip write bodies: saves bandwidth to a remote InfluxDB, but on the same machine it
    # only spends CPU on both sides. None (default): compress unless the host is loopback.
    influx_gzip: bool | None = None
    write_interval_ms: float = Field(default=50.0, gt=0)  # at most this long between a commit and its write
    spool_segment_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    # Disk thresholds of the spool's filesystem: each is the smaller of an absolute value
    # and a share of the filesystem's size, so that a 2 GB volume pauses at 100 MB free
    # instead of never leaving a warning. Intake pauses below MIN_FREE and resumes once
    # free space (counting consumed spool data not yet given back) is a little above it.
    spool_warn_free_bytes: int = Field(default=2 * 1024**3, ge=0)
    spool_warn_free_percent: float = Field(default=15.0, ge=0, le=100)
    spool_min_free_bytes: int = Field(default=256 * 1024**2, ge=0)
    spool_min_free_percent: float = Field(default=5.0, ge=0, le=100)
    # The dead-letter store's own limits (garbage must never fill the spool's disk): the
    # oldest rows are evicted past the size quota (the smaller of bytes and percent of the
    # filesystem) or the retention; evictions are logged and counted in /metrics.
    deadletter_max_bytes: int = Field(default=256 * 1024**2, ge=64 * 1024)
    deadletter_max_percent: float = Field(default=10.0, gt=0, le=100)
    deadletter_retention_days: float = Field(default=30.0, gt=0)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("rule_pack", mode="after")
    @classmethod
    def _pack_name(cls, v: str) -> str:
        # the form only: whether such a pack ships is the application's start-up check
        # (app/preflight.py), which may look into the alerts package this one sits below
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
            raise ValueError("must be a pack name like default, hebei, shanghai")
        return v

    @field_validator("influx_token_file", mode="after")
    @classmethod
    def _token_file_readable(cls, v: Path | None) -> Path | None:
        if v is None:
            return v
        try:
            empty = not v.read_text("utf-8").strip()
        except OSError as exc:
            raise ValueError(f"CW_INFLUX_TOKEN_FILE={v} cannot be read: {exc.strerror}") from None
        if empty:
            raise ValueError(f"CW_INFLUX_TOKEN_FILE={v} is empty")
        return v

    @model_validator(mode="after")
    def _token_from_file(self) -> "Settings":
        # After validation, so that an error quotes the path only, never other settings.
        if self.influx_token is None and self.influx_token_file is not None:
            token = SecretStr(self.influx_token_file.read_text("utf-8").strip())
            object.__setattr__(self, "influx_token", token)  # frozen model: set once, while it is built
        return self

    @field_validator("mqtt_ca_file", mode="after")
    @classmethod
    def _readable_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"CW_MQTT_CA_FILE={v} is not a readable file (the CA certificate, PEM)")
        return v

    @field_validator("routes_file", "dashboard_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().absolute()

    # -- validation: every setting is checked here, before anything starts -----------
    @field_validator("mqtt_url", mode="after")
    @classmethod
    def _mqtt_url(cls, v: SecretStr) -> SecretStr:
        try:
            MqttAddress.parse(v.get_secret_value())
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("CW_MQTT_URL ") + " (e.g. mqtt://user:pass@broker:1883)") from None
        return v

    @field_validator("influx_url", mode="after")
    @classmethod
    def _influx_url(cls, v: str) -> str:
        _check_http_url(v, "http://influxdb:8086")
        return v

    @field_validator("alert_webhook_url", mode="after")
    @classmethod
    def _webhook_url(cls, v: str | None) -> str | None:
        if v:
            _check_http_url(v, "https://receiver.example/hook")
        return v or None

    @field_validator("tz", mode="after")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v[:64]!r}: use an IANA name such as Asia/Shanghai") from None
        return v

    @field_validator("api_host", mode="after")
    @classmethod
    def _api_host(cls, v: str) -> str:
        _check_host(v)
        return v

    @field_validator("hj212_listen", mode="after")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v:
            parse_listen(v)
        return v or None

    @field_validator("devices_file", mode="after")
    @classmethod
    def _devices_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"no such file {str(v)[:200]}: point it at a devices TOML (deploy/devices.toml is an example) or unset it")
        return v

    @field_validator("rules_dir", mode="after")
    @classmethod
    def _rules_dir(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_dir():
            raise ValueError(f"no such directory {str(v)[:200]}: point it at a folder of rule YAML files or unset it")
        return v

    @field_validator("api_tls_cert", "api_tls_key", mode="after")
    @classmethod
    def _tls_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"no such file {str(v)[:200]}: give a PEM file, or unset both CW_API_TLS_CERT and CW_API_TLS_KEY")
        return v

    @field_validator("log_level", mode="after")
    @classmethod
    def _log_level(cls, v: str) -> str:
        if v.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return v

    @field_validator("influx_database", mode="after")
    @classmethod
    def _database(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", v):
            raise ValueError("must match [A-Za-z0-9_-]{1,64}")
        return v

    @model_validator(mode="after")
    def _together(self) -> "Settings":
        if self.alert_webhook_url:
            secret = self.alert_webhook_secret.get_secret_value() if self.alert_webhook_secret else ""
            if len(secret.encode()) < MIN_WEBHOOK_SECRET_BYTES:
                raise _SettingError("alert_webhook_secret", (
                    f"CW_ALERT_WEBHOOK_URL is set, so a secret of at least {MIN_WEBHOOK_SECRET_BYTES} bytes is needed "
                    f"({'missing' if not secret else f'{len(secret.encode())} bytes given'}); make one with "
                    "`openssl rand -hex 32` and give the receiver the same"))
        if (self.api_tls_cert is None) != (self.api_tls_key is None):
            missing = "api_tls_key" if self.api_tls_key is None else "api_tls_cert"
            raise _SettingError(missing, "CW_API_TLS_CERT and CW_API_TLS_KEY go together: set both (HTTPS) or neither")
        if self.influx_api == "v2":
            if not (self.influx_token and self.influx_token.get_secret_value()):
                raise _SettingError("influx_token", "CW_INFLUX_API=v2 needs CW_INFLUX_TOKEN (an InfluxDB 2 API token)")
            if not self.influx_org:
                raise _SettingError("influx_org", "CW_INFLUX_API=v2 needs CW_INFLUX_ORG (the organisation name)")
        return self

    @classmethod
    def load(cls, **overrides: object) -> "Settings":
        """Environment first, then an optional TOML file (`CW_CONFIG`), then defaults."""
        import os

        file_values: dict[str, object] = {}
        config_path = os.environ.get("CW_CONFIG")
        if config_path:
            try:
                file_values = tomllib.loads(Path(config_path).read_text("utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read CW_CONFIG={config_path}: {exc}") from exc
        env_keys = {k[3:].lower() for k in os.environ if k.startswith("CW_")}
        merged = {k: v for k, v in file_values.items() if k not in env_keys}
        merged.update(overrides)
        try:
            # [arg-type]: TOML and overrides are a dict of anything; pydantic validates each value.
            return cls(**merged)  # type: ignore[arg-type]
        except ValidationError as exc:  # one line per setting: its variable, what is wrong, the fix
            raise ConfigError("\n".join(_describe(e) for e in exc.errors())) from None
        except _SettingError as exc:
            raise ConfigError(exc.line) from None

    # -- derived views -------------------------------------------------------------
    @property
    def mqtt(self) -> "MqttAddress":
        return MqttAddress.parse(self.mqtt_url.get_secret_value())

    @property
    def spool_dir(self) -> Path:
        """The main process's spool; each ingest worker has its own beside it."""
        if self.worker_index is not None:
            return self.data_dir / f"spool-mqtt-{self.worker_index}"
        return self.data_dir / "spool"

    @property
    def effective_ingest_workers(self) -> int:
        import os

        return self.ingest_workers or max(1, min(os.cpu_count() or 1, 4))

    @property
    def deadletter_path(self) -> Path:
        return self.data_dir / "deadletters.sqlite3"

    @property
    def alert_state_path(self) -> Path:
        return self.data_dir / "alerts.sqlite3"


class _SettingError(ValueError):
    """A problem with one setting found by a check that looks at several."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.line = f"CW_{name.upper()}: {message}"


def _describe(error: ErrorDetails) -> str:
    loc = [str(x) for x in error.get("loc", ())]
    ctx = error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, _SettingError):
        return cause.line
    msg = str(cause) if cause is not None else error.get("msg", "invalid")
    msg = msg.removeprefix("Value error, ")
    name = f"CW_{loc[0].upper()}" if loc else "settings"
    return f"{name}: {msg}"


def _check_http_url(url: str, example: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{redact_url(url)[:200]} is not a URL: use e.g. {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact_url(url)[:200]} must be http(s)://host[:port][/path], e.g. {example}")
    if port == 0:
        raise ValueError(f"{redact_url(url)[:200]} has port 0: use the server's port, e.g. {example}")


def _check_host(host: str) -> None:
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return
    except ValueError:
        pass
    if not _HOSTNAME.match(bare):
        raise ValueError(f"{host[:100]!r} is neither an IP address nor a host name: use e.g. 127.0.0.1 or 0.0.0.0")


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:port`) → (host, port); ValueError naming the fix."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text[:100]!r} must be host:port, e.g. 0.0.0.0:9212")
    _check_host(host)
    return host.strip("[]"), int(port)


class MqttAddress:
    """`mqtt://[user:pass@]host:port` split into parts; repr never shows the password."""

    __slots__ = ("host", "port", "username", "password", "tls")

    def __init__(self, host: str, port: int, username: str | None, password: str | None, tls: bool):
        self.host, self.port, self.username, self.password, self.tls = host, port, username, password, tls

    @classmethod
    def parse(cls, url: str) -> "MqttAddress":
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ConfigError("CW_MQTT_URL must start with mqtt:// or mqtts://")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConfigError("CW_MQTT_URL has an invalid port") from exc
        if not parts.hostname:
            raise ConfigError("CW_MQTT_URL has no host")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, user, password, tls)

    def __repr__(self) -> str:
        who = f"{self.username}:***@" if self.username else ""
        return f"mqtt{'s' if self.tls else ''}://{who}{self.host}:{self.port}"
