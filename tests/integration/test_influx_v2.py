"""The v2 write dialect (`CW_INFLUX_API=v2`, `/api/v2/write` with org, bucket and token)
against a real server that speaks it: Debian's victoria-metrics (Debian's InfluxDB is 1.6,
which has no /api/v2/write)."""

from __future__ import annotations

import shutil
import time

import pytest

from devtools.servers import VictoriaMetrics
from tests.support import Publisher, ServiceProcess, readings, service_env

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("victoria-metrics") is None and not
                                 __import__("os").path.exists("/usr/bin/victoria-metrics"),
                                 reason="victoria-metrics not installed (make test installs it)")]


def test_v2_dialect_delivers_every_reading(mosquitto, tmp_path):
    with VictoriaMetrics(tmp_path / "vm") as vm:
        env = service_env(mqtt_url=mosquitto.url, influx_url=vm.url, data_dir=tmp_path / "cw", database="bucket1",
                          influx_api="v2", influx_org="cityorg", influx_token="secret-token-123")
        svc = ServiceProcess(env, tmp_path / "service.log").start()
        svc.wait_log("connected to broker")
        pub = Publisher(mosquitto.port, "pub-v2")
        pub.publish_all(readings(10, 200))
        pub.close()
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline and n < 2000:
            n = vm.count("dust_pm10")
            time.sleep(0.5)
        assert n == 2000
        assert svc.stop() == 0
        assert "secret-token-123" not in svc.log(), "the token must never be logged"
