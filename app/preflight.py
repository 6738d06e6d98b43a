"""Every setting checked before `citywatch run` starts a process or opens a connection.

`Settings` (the domain core) checks each value on its own; what needs the layers above —
the alert rules and the rule pack, the API's token grammar, the device registry's
districts, a TLS key pair, a port to bind — is checked here. A bad setting ends start-up
with a `ConfigError` naming it (`citywatch: CW_X: what is wrong; fix`, exit 2), and
nothing is left running.
"""

from __future__ import annotations

import errno
import socket
import ssl
import tomllib

from alerts.rules import load_rules, rule_packs
from api.auth import TokenStore
from citywatch.errors import ConfigError
from citywatch.registry import Registry
from citywatch.settings import Settings, parse_listen


def check_rule_pack(settings: Settings) -> None:
    """CW_RULE_PACK names a pack that ships (a folder under alerts/rules/packs/)."""
    known = rule_packs()
    if settings.rule_pack not in known:
        raise ConfigError(f"CW_RULE_PACK: {settings.rule_pack!r} is not a shipped rule pack ({', '.join(known)})")


def preflight(settings: Settings) -> None:
    """The checks that need more than the values themselves: rule pack and rule files,
    the device registry, API tokens, the TLS key pair, listen addresses, the data
    directory. Raises ConfigError naming the setting."""
    check_rule_pack(settings)
    if settings.alerts_enabled:
        try:
            load_rules(settings.rules_dir)
        except ConfigError as exc:
            lines = str(exc).splitlines()
            more = f" (and {len(lines) - 2} more; run `citywatch rules check`)" if len(lines) > 2 else ""
            raise ConfigError(f"CW_RULES_DIR: {' '.join(x.strip() for x in lines[:2])}{more}") from None
    districts = _registry_districts(settings)
    # after the registry: a token's districts must be districts of the registry
    if settings.api_tokens is not None and settings.api_tokens.get_secret_value().strip():
        try:
            TokenStore.parse(settings.api_tokens.get_secret_value(), districts)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; the form is token=role[:name][:district|...],... with roles viewer, operator, "
                              "admin and tokens of at least 8 characters (e.g. `openssl rand -hex 16`)") from None
    if settings.api_tls_cert is not None and settings.api_tls_key is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(settings.api_tls_cert,
                                                                                settings.api_tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"CW_API_TLS_CERT / CW_API_TLS_KEY: cannot load the key pair ({exc.__class__.__name__}: "
                              f"{getattr(exc, 'reason', None) or exc}); give a PEM certificate and its private key"
                              ) from None
    api_served = settings.api_tokens is not None and bool(settings.api_tokens.get_secret_value().strip())
    listens = (("CW_API_HOST / CW_API_PORT", (settings.api_host.strip("[]"), settings.api_port) if api_served else None),
               ("CW_HJ212_LISTEN", parse_listen(settings.hj212_listen) if settings.hj212_listen else None))
    for name, listen in listens:
        if listen is not None:
            check_bindable(name, *listen)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"CW_DATA_DIR: cannot create {settings.data_dir} ({exc.strerror}); "
                          "choose a writable directory") from None


def _registry_districts(settings: Settings) -> frozenset[str] | None:
    if settings.devices_file is None:
        return None
    try:
        registry_doc = tomllib.loads(settings.devices_file.read_text("utf-8"))
        unknown = sorted(set(registry_doc) - {"device"})
        if unknown:  # e.g. [[devices]]: read as an empty registry, every device refused
            raise ConfigError(f"CW_DEVICES_FILE: {settings.devices_file} has {unknown[0]!r} where only "
                              "[[device]] tables belong (see deploy/devices.toml)")
        return Registry.load(settings.devices_file).districts
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"CW_DEVICES_FILE: cannot read {settings.devices_file}: {exc}") from None
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith("CW_DEVICES_FILE") else f"CW_DEVICES_FILE: {text}") from None


def check_bindable(name: str, host: str, port: int) -> None:
    """Bind and release the address the service will listen on: a port in use or an address
    that is not this machine's is a start-up error, not a traceback after the ingest
    process has started. (Something may still take the port in between; rare.)"""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"{name}: cannot resolve {host!r} ({exc.strerror}); use an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio and uvicorn bind
        try:
            sock.bind(address)
        except OSError as exc:
            hint = {errno.EADDRINUSE: "choose a free port or stop what holds it",
                    errno.EADDRNOTAVAIL: "use an address of this machine (or 0.0.0.0)",
                    errno.EACCES: "ports below 1024 need privileges; use a higher one"}.get(exc.errno, "")
            raise ConfigError(f"{name}: cannot listen on {host}:{port} ({exc.strerror})"
                              + (f"; {hint}" if hint else "")) from None
