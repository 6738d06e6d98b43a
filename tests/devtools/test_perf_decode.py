"""devtools.perf_decode: the micro benchmark runs end to end on a tiny fleet."""

from __future__ import annotations

import json

from devtools.perf_decode import main


def test_the_benchmark_reports_decode_and_commit_costs(tmp_path, capsys):
    out = tmp_path / "perf.json"
    assert main(["--sites", "3", "--duration", "300", "--runs", "1", "--group", "7", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["messages"] == result["accepted"] > 0 and result["rejected"] == 0
    for name in ("decode_cpu_us", "commit_cpu_us", "commit_wall_us"):
        assert result[name]["median"] > 0 and len(result[name]["runs"]) == 1
    assert "decode_cpu_us" in capsys.readouterr().out
