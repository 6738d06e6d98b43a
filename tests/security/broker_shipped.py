"""The shipped broker (deploy/mosquitto/) on ephemeral loopback ports, for the security tests.

The test copy of mosquitto.conf differs from the shipped file only where a test must
differ: the listeners' ports (bound to 127.0.0.1), file locations (a temp dir holding the
shipped ACL, password files made by scripts/mqtt-credentials.sh and certificates made by
scripts/make-certs.sh) and, when run as root, the user to stay. Every other line — the
identity settings, TLS, the ACL — is the shipped one; `rewrite_shipped_config` refuses a
file it does not understand rather than silently testing something else.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devtools.servers import MOSQUITTO_CANDIDATES, _Server, _wait_tcp, find_binary, free_port

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "mosquitto"
DEVICE_LISTENER, SERVICE_LISTENER = 8883, 8884


def make_certs(out: Path, *args: str) -> Path:
    """Run the shipped certificate script into `out`; returns `out`."""
    subprocess.run([str(ROOT / "scripts" / "make-certs.sh"), "-o", str(out), *args], check=True,
                   capture_output=True, text=True)
    return out


def make_credentials(passwd_dir: Path, user: str) -> str:
    """Run the shipped credentials script; returns the printed password."""
    r = subprocess.run([str(ROOT / "scripts" / "mqtt-credentials.sh"), user], check=True, capture_output=True,
                       text=True, env={**os.environ, "MQTT_PASSWD_DIR": str(passwd_dir)})
    name, _, password = r.stdout.strip().rpartition("\n")[2].partition(": ")
    assert name == user and password, r.stdout
    return password


def rewrite_shipped_config(text: str, *, ports: dict[int, int], config_dir: Path, certs_dir: Path,
                           data_dir: Path) -> str:
    """The shipped mosquitto.conf with ports and paths moved into a test's temp dir."""
    out = []
    seen_ports: set[int] = set()
    for line in text.splitlines():
        m = re.fullmatch(r"listener (\d+)", line.strip())
        if m:
            port = int(m.group(1))
            if port not in ports:
                raise AssertionError(f"the shipped config has a listener the tests do not know: {line!r}")
            seen_ports.add(port)
            line = f"listener {ports[port]} 127.0.0.1"
        elif line.startswith(("certfile ", "keyfile ", "password_file ", "acl_file ", "cafile ")):
            key, path = line.split(" ", 1)
            base = certs_dir if path.startswith("/mosquitto/certs/") else config_dir
            if not path.startswith(("/mosquitto/certs/", "/mosquitto/config/")):
                raise AssertionError(f"unexpected path in the shipped config: {line!r}")
            line = f"{key} {base / Path(path).name}"
        elif line.startswith("persistence_location "):
            line = f"persistence_location {data_dir}/"
        out.append(line)
    if seen_ports != set(ports):
        raise AssertionError(f"listeners {sorted(set(ports) - seen_ports)} missing from the shipped config")
    # Started as root, mosquitto would drop to user "mosquitto", who cannot read the temp dir.
    out.append(f"user {getpass.getuser()}")
    return "\n".join(out) + "\n"


@dataclass
class ShippedBroker(_Server):
    """mosquitto from deploy/mosquitto/{mosquitto.conf,acl}; `port` is the device listener
    (8883 in production), `service_port` the service's (8884)."""

    service_port: int = field(default_factory=free_port)
    users: tuple[str, ...] = ("citywatch", "safety-office", "D00001", "D00002")
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def ca_file(self) -> Path:
        return self.certs / "ca.crt"

    def device_url(self, user: str) -> str:
        return f"mqtts://{user}:{self.passwords[user]}@127.0.0.1:{self.port}"

    def service_url(self) -> str:
        return f"mqtts://citywatch:{self.passwords['citywatch']}@127.0.0.1:{self.service_port}"

    def _command(self) -> list[str]:
        config_dir, data_dir = self.root / "config", self.root / "data"
        if not config_dir.exists():  # first start; a restart keeps users, certificates and data
            config_dir.mkdir(parents=True)
            data_dir.mkdir(parents=True)
            shutil.copy(SHIPPED / "acl", config_dir / "acl")
            for user in self.users:
                self.passwords[user] = make_credentials(config_dir, user)
            make_certs(self.certs, "localhost", "127.0.0.1")
        conf = self.root / "mosquitto.conf"
        conf.write_text(rewrite_shipped_config(
            (SHIPPED / "mosquitto.conf").read_text(), ports={DEVICE_LISTENER: self.port,
                                                             SERVICE_LISTENER: self.service_port},
            config_dir=config_dir, certs_dir=self.certs, data_dir=data_dir))
        return [find_binary("mosquitto", MOSQUITTO_CANDIDATES), "-c", str(conf)]

    def _ready(self, timeout: float) -> None:
        assert self.proc is not None
        _wait_tcp(self.port, self.proc, "mosquitto", timeout, self.log_path)
        _wait_tcp(self.service_port, self.proc, "mosquitto", timeout, self.log_path)
