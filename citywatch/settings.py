"""The one settings object, read from `CW_*` environment variables (CONTRACT §2).

Built once in the command-line entry point and passed down; nothing else reads the
environment. A TOML file named by `CW_CONFIG` may mirror the variables (lower-case keys
without the prefix); the environment wins.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from citywatch.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CW_", extra="ignore", frozen=True)

    mqtt_url: SecretStr = SecretStr("mqtt://127.0.0.1:1883")
    mqtt_client_id: str = "citywatch-ingest"
    influx_url: str = "http://127.0.0.1:8086"
    influx_api: Literal["v1", "v2"] = "v1"
    influx_database: str = "citywatch"
    influx_org: str | None = None
    influx_token: SecretStr | None = None
    influx_user: str | None = None
    influx_password: SecretStr | None = None
    data_dir: Path = Path("./var/citywatch")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_tokens: SecretStr | None = None
    tz: str = "Asia/Shanghai"
    devices_file: Path | None = None
    rules_dir: Path | None = None
    hj212_listen: str | None = None
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

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().absolute()

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
            return cls(**merged)  # type: ignore[arg-type]
        except Exception as exc:  # pydantic ValidationError: keep it readable
            raise ConfigError(f"invalid settings: {exc}") from exc

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
