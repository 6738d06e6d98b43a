"""`citywatch bench --tls` (small N): both modes measured on one broker, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(240)
def test_bench_tls_measures_plain_and_tls_without_loss(tmp_path: Path) -> None:
    out = tmp_path / "bench-tls.json"
    proc = subprocess.run([sys.executable, "-m", "app.cli", "bench", "--tls", "--quick", "--readings", "5000",
                           "--json", str(out)], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=230)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "tls" and res["n_readings"] == 5000
    for mode in ("plain", "tls"):
        m = res[mode]
        assert m["counted"] == 5000 and m["lost"] == 0 and m["extra"] == 0, (mode, m)
        assert m["readings_per_s"] > 0 and m["cpu_s_per_100k"] > 0
    assert res["tls_vs_plain_readings_per_s"] > 0
    assert "| tls |" in proc.stdout and "| plain |" in proc.stdout
    assert "tls1: service" in proc.stderr  # the TLS run really ran
