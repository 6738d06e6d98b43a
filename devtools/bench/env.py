"""The servers of one benchmark run, started and stopped in one place: `bench_env` makes
the temp dir, starts mosquitto (with a TLS listener when asked) and influxd, and on the
way out stops every publisher and subprocess it tracked, the servers, and removes the dir
(kept with CW_BENCH_KEEP=1). Every mode runs inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devtools.bench.common import COUNT_FIELDS, PROBE_SITE, ROOT, progress
from devtools.bench.procs import Child
from devtools.bench.publish import PublishJob
from devtools.servers import Influxd, Mosquitto, free_port


class Influx:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30)

    def query(self, db: str, q: str, **params: str) -> list[dict]:
        r = self.http.get(f"{self.url}/query", params={"db": db, "q": q, **params})
        r.raise_for_status()
        return r.json().get("results", [])

    def count_readings(self, db: str) -> int:
        q = ";".join(f'SELECT count("{f}") FROM "{k}" WHERE site != \'{PROBE_SITE}\''
                     for k, f in COUNT_FIELDS.items())
        total = 0
        for res in self.query(db, q):
            for s in res.get("series") or []:
                total += int(s["values"][0][1])
        return total

    def close(self) -> None:
        self.http.close()


@dataclass
class Env:
    root: Path
    mosquitto: Mosquitto
    influxd: Influxd
    influx: Influx
    children: list[Child] = field(default_factory=list)
    jobs: list[PublishJob] = field(default_factory=list)
    workers: int = 1  # CW_INGEST_WORKERS of the measured service
    tls_url: str | None = None  # the broker's TLS listener (bench_env(tls=True)) and its CA
    ca_file: str | None = None

    @property
    def server_pids(self) -> tuple[int, int]:
        return self.mosquitto.proc.pid, self.influxd.proc.pid  # type: ignore[union-attr]

    def track(self, child: Child) -> Child:
        self.children.append(child)
        return child


def tls_listener(root: Path) -> tuple[str, int, Path]:
    """Certificates made by scripts/make-certs.sh under `root`, and the mosquitto lines of a
    TLS listener on a free loopback port that uses them: (config, port, CA file)."""
    script = ROOT / "scripts" / "make-certs.sh"
    if not script.exists():
        raise SystemExit(f"--tls needs {script} (run the bench from a checkout)")
    certs = root / "certs"
    subprocess.run([str(script), "-o", str(certs), "localhost", "127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    config = (f"listener {port} 127.0.0.1\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n")
    return config, port, certs / "ca.crt"


@contextmanager
def bench_env(title: str, *, workers: int = 1, tls: bool = False,
              prefix: str = "citywatch-bench-") -> Iterator[Env]:
    """A temp dir, mosquitto and influxd started in it, the `Env` a mode measures with.
    Everything is stopped on the way out, Ctrl-C and errors too: the publishers and
    subprocesses the mode tracked (`env.jobs`, `env.track`), then the servers."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    progress(f"{title}; servers and data in {root}")
    env: Env | None = None
    try:
        config, tls_url, ca_file = "", None, None
        if tls:
            config, tls_port, ca = tls_listener(root)
            tls_url, ca_file = f"mqtts://localhost:{tls_port}", str(ca)
        mosq, infl = Mosquitto(root / "mosquitto", extra_config=config), Influxd(root / "influxd")
        try:
            mosq.start()
            infl.start()
            env = Env(root, mosq, infl, Influx(infl.url), workers=workers, tls_url=tls_url, ca_file=ca_file)
            yield env
        finally:
            if env is not None:
                for job in env.jobs:
                    job.stop()
                for child in env.children:
                    child.stop(timeout=15)
                env.influx.close()
            infl.stop()
            mosq.stop()
    finally:
        if os.environ.get("CW_BENCH_KEEP") != "1":
            shutil.rmtree(root, ignore_errors=True)
        else:
            progress(f"kept {root}")
