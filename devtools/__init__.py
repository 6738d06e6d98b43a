"""Developer tools of the source checkout, not part of the installed service.

The benchmark (`citywatch bench`, devtools/bench/), `make demo`, the mosquitto/influxd
launchers the tests, bench and demo share, the tutorial baseline the bench compares
against, and the perf probes. Nothing under citywatch/, ingest/, alerts/, api/ or
simulators/ imports from here; pyproject.toml leaves this folder out of the package and
the Dockerfile does not copy it. The dev venv finds it through a `.pth` file holding the
checkout's root (`make venv` writes it).
"""
