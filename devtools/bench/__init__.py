"""`citywatch bench`: capacity, loss, latency and cost of the service against the tutorial
pipeline (devtools/baseline.py), on one machine, with real servers.

Everything it starts lives in one temp dir and is stopped on the way out, Ctrl-C too
(env.py `bench_env`): a mosquitto and an influxd on ephemeral ports, `citywatch run` and
the baseline as subprocesses, publisher worker processes. How each figure is measured is
in docs/benchmarks.md. The parts: capacity.py (queued backlog -> queryable), live.py
(latency under load), hj212.py, tls.py (`--tls`), outage.py (`--outage N`), standard.py
(the default run), report.py (table and JSON), modes.py (which run an option selects).
"""

from devtools.bench.modes import run_bench

__all__ = ["run_bench"]
