"""The route file (`CW_ROUTES_FILE`, YAML) as pydantic models, and its loader.

The format follows Prometheus Alertmanager's `route` / `receivers` / `inhibit_rules`
(see alerts/README.md, "Routing"). `load_routes(path)` either returns a validated
`RoutesFile` or raises one `ConfigError` naming the file, the line and the reason of
every problem. Error messages never include a value from the file: receiver URLs and
secrets are credentials.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, field_validator, \
    model_validator

from alerts.rules import parse_duration
from citywatch.errors import ConfigError
from citywatch.net import is_loopback

LABELS = ("kind", "site", "district", "device", "rule", "severity", "field")
"""Alert labels a route, a group or an inhibit rule may name."""

_NAME = r"^[A-Za-z0-9_-]{1,64}$"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")

Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def check_url(url: str) -> None:
    """https, or http to a loopback address (tests, a local relay). Never echoes the URL."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback(parts.hostname):
        return
    raise ValueError("a receiver URL must be https:// (http:// only to a loopback address)")


def _secret_url(v: SecretStr) -> SecretStr:
    check_url(v.get_secret_value())
    return v


def _labels(v: dict[str, str] | list[str]) -> Any:
    for k in v:
        if k not in LABELS:
            raise ValueError(f"unknown label {k!r}: use one of {', '.join(LABELS)}")
    return v


def _regexes(v: dict[str, str]) -> dict[str, str]:
    _labels(v)
    for k, pattern in v.items():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"match_re.{k}: invalid regular expression ({exc})") from None
    return v


Matchers = Annotated[dict[str, str], BeforeValidator(lambda v: {k: str(x) for k, x in (v or {}).items()}
                                                     if isinstance(v, dict) else v)]


class _HttpReceiver(_Strict):
    name: str = Field(pattern=_NAME)
    url: SecretStr
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    language: Literal["zh", "en"] = "zh"
    timeout: Seconds = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        return _secret_url(v)


class DingTalkReceiver(_HttpReceiver):
    """DingTalk custom robot (自定义机器人): markdown; signed when `secret` (SEC...) is set."""

    type: Literal["dingtalk"]
    secret: SecretStr | None = None
    at_mobiles: list[Annotated[str, Field(pattern=r"^\+?[0-9-]{5,20}$")]] = []
    at_all: bool = False


class WeComReceiver(_HttpReceiver):
    """WeCom (企业微信) group robot: markdown; the key is in the URL."""

    type: Literal["wecom"]


class FeishuReceiver(_HttpReceiver):
    """Feishu / Lark custom bot: interactive card; signed when `secret` is set."""

    type: Literal["feishu"]
    secret: SecretStr | None = None


class WebhookReceiver(_HttpReceiver):
    """The generic citywatch webhook (HMAC-SHA256 signed, alerts/README.md), one group per POST."""

    type: Literal["webhook"]
    # Required, as for CW_ALERT_WEBHOOK_SECRET: an empty key signs nothing a receiver can trust.
    secret: SecretStr

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, v: SecretStr) -> SecretStr:
        from alerts.notify import MIN_SECRET_BYTES

        if len(v.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"a webhook secret must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)")
        return v


class SmsReceiver(_HttpReceiver):
    """A generic SMS gateway: one HTTP request per message from a template.

    `body` is a `string.Template`: `$text` (short message), `$title`, `$phones` (comma
    separated), `$phones_json` (JSON array). With a JSON content type every value is
    JSON-string-escaped (without the quotes: the template writes them)."""

    type: Literal["sms"]
    phones: list[Annotated[str, Field(pattern=r"^\+?[0-9-]{5,20}$")]] = Field(min_length=1)
    method: Literal["POST", "PUT", "GET"] = "POST"
    headers: dict[str, SecretStr] = {}
    content_type: str = "application/json; charset=utf-8"
    body: str = '{"phones": $phones_json, "text": "$text"}'
    ok_when: str | None = None  # a regex the response body must contain (gateways that answer 200 on errors)

    @field_validator("body")
    @classmethod
    def _template(cls, v: str) -> str:
        import string

        try:
            string.Template(v).substitute(text="", title="", phones="", phones_json="[]", site="")
        except (KeyError, ValueError) as exc:
            raise ValueError(f"body template: unknown or bad placeholder {exc} "
                             "(use $text $title $phones $phones_json $site)") from None
        return v

    @field_validator("ok_when")
    @classmethod
    def _ok_when(cls, v: str | None) -> str | None:
        if v is not None:
            re.compile(v)
        return v


class MqttReceiver(_Strict):
    """Group notifications as JSON on the service's own broker (CW_MQTT_URL), QoS 1."""

    type: Literal["mqtt"]
    name: str = Field(pattern=_NAME)
    topic: str = Field(default="citywatch/alert-groups/{receiver}", pattern=r"^[^#+\s]{1,200}$")
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    language: Literal["zh", "en"] = "zh"

    @field_validator("topic")
    @classmethod
    def _not_alerts(cls, v: str) -> str:
        if v.split("/")[0] == "alerts":
            raise ValueError("alerts/... topics are the per-alert contract (docs/contract.md §3): pick another topic")
        return v


class EmailReceiver(_Strict):
    """Email over SMTP. Plain SMTP only to a loopback relay; else `starttls` or `ssl`."""

    type: Literal["email"]
    name: str = Field(pattern=_NAME)
    smtp_host: str
    smtp_port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)
    rate_limit_per_minute: int | None = Field(default=None, ge=1)
    language: Literal["zh", "en"] = "zh"
    timeout: Seconds = 30.0

    @model_validator(mode="after")
    def _secure(self) -> "EmailReceiver":
        if self.tls == "none" and not is_loopback(self.smtp_host):
            raise ValueError("tls: none is only allowed to a loopback SMTP relay")
        return self


ReceiverConfig = Annotated[DingTalkReceiver | WeComReceiver | FeishuReceiver | WebhookReceiver | SmsReceiver
                           | EmailReceiver | MqttReceiver, Field(discriminator="type")]


class RouteConfig(_Strict):
    """One node of the routing tree. Unset `group_*` / `repeat_interval` / `receiver` are
    inherited from the parent."""

    receiver: str | None = None
    match: Matchers = {}
    match_re: dict[str, str] = {}
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[str] | None = None
    group_wait: Seconds | None = None
    group_interval: Seconds | None = None
    repeat_interval: Seconds | None = None
    active_time: list[str] | None = None
    routes: list["RouteConfig"] = []

    @field_validator("match")
    @classmethod
    def _match(cls, v: dict[str, str]) -> dict[str, str]:
        return _labels(v)

    @field_validator("match_re")
    @classmethod
    def _match_re(cls, v: dict[str, str]) -> dict[str, str]:
        return _regexes(v)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _labels(v)

    @field_validator("active_time", mode="before")
    @classmethod
    def _active_time(cls, v: Any) -> Any:
        if v is None:
            return None
        items = [v] if isinstance(v, str) else v
        for item in items:
            if not isinstance(item, str) or not _HHMM.match(item.strip()):
                raise ValueError("active_time is HH:MM-HH:MM (local time, CW_TZ) or a list of them")
        return [i.strip() for i in items]


class InhibitRuleConfig(_Strict):
    """While an alert matching `source_*` fires, alerts matching `target_*` with the same
    values of the `equal` labels are not notified (Alertmanager's inhibit_rules)."""

    source_match: Matchers = {}
    source_match_re: dict[str, str] = {}
    target_match: Matchers = {}
    target_match_re: dict[str, str] = {}
    equal: list[str] = []

    @field_validator("source_match", "target_match")
    @classmethod
    def _m(cls, v: dict[str, str]) -> dict[str, str]:
        return _labels(v)

    @field_validator("source_match_re", "target_match_re")
    @classmethod
    def _mre(cls, v: dict[str, str]) -> dict[str, str]:
        return _regexes(v)

    @field_validator("equal")
    @classmethod
    def _equal(cls, v: list[str]) -> list[str]:
        return _labels(v)

    @model_validator(mode="after")
    def _some_source(self) -> "InhibitRuleConfig":
        if not (self.source_match or self.source_match_re):
            raise ValueError("an inhibit rule needs source_match or source_match_re")
        return self


class RoutesFile(_Strict):
    receivers: list[ReceiverConfig] = Field(min_length=1)
    route: RouteConfig
    inhibit_rules: list[InhibitRuleConfig] = []

    @model_validator(mode="after")
    def _references(self) -> "RoutesFile":
        names = [r.name for r in self.receivers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"receiver names must be unique: {', '.join(dup)}")
        if self.route.receiver is None:
            raise ValueError("the top-level route needs a receiver (the default)")
        if self.route.match or self.route.match_re:
            raise ValueError("the top-level route matches every alert: no match / match_re there")
        return self  # unknown receiver names: unknown_receivers(), which knows where they are

    def unknown_receivers(self) -> list[tuple[tuple[Any, ...], str]]:
        """(location, reason) of every route naming a receiver the file does not define."""
        names = {r.name for r in self.receivers}
        found: list[tuple[tuple[Any, ...], str]] = []

        def walk(r: RouteConfig, loc: tuple[Any, ...]) -> None:
            if r.receiver is not None and r.receiver not in names:
                found.append(((*loc, "receiver"), f"unknown receiver {r.receiver!r}"))
            for i, child in enumerate(r.routes):
                walk(child, (*loc, "routes", i))

        walk(self.route, ("route",))
        return found

    def receiver(self, name: str) -> Any:
        return next(r for r in self.receivers if r.name == name)


_TYPES = ("dingtalk", "wecom", "feishu", "webhook", "sms", "email", "mqtt")


# -- loading ---------------------------------------------------------------------------------
def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (as deep as it exists;
    location parts that are not keys, like a union's tag, are skipped)."""
    node = root
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(part):
                    node = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def parse_routes(text: str, source: str = "<routes>") -> RoutesFile:
    """Validate a route file's text; ConfigError lists `source:line: where: reason` per problem."""
    try:
        root = yaml.compose(text)
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else "?"
        raise ConfigError(f"{source}:{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}:1: a route file is a mapping with receivers, route and inhibit_rules")
    try:
        cfg = RoutesFile.model_validate(doc)
        problems = cfg.unknown_receivers()
    except ValidationError as exc:
        problems = [(tuple(e["loc"]), e["msg"].removeprefix("Value error, "))
                    for e in exc.errors(include_input=False, include_url=False)]
    if not problems:
        return cfg
    lines = []
    for loc, msg in problems:
        # A receiver's loc carries the union's tag ("receivers", 0, "dingtalk", "url").
        shown = loc[:2] + loc[3:] if len(loc) > 2 and loc[0] == "receivers" and loc[2] in _TYPES else loc
        where = ".".join(str(p) for p in shown) or "(file)"
        lines.append(f"{source}:{_line_of(root, loc) or 1}: {where}: {msg}")
    raise ConfigError("invalid route file\n  " + "\n  ".join(lines))


def load_routes(path: Path | str) -> RoutesFile:
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read CW_ROUTES_FILE {path}: {type(exc).__name__}: {exc.strerror if isinstance(exc, OSError) else 'not UTF-8'}") from None
    return parse_routes(text, str(path))
