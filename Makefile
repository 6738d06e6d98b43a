# citywatch — the two set-up commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SERVER_DEBS := mosquitto influxdb
# Browser test (dashboard), CJK fonts for its screenshot, compose checker, a v2-dialect server.
TEST_DEBS   := chromium fonts-noto-cjk docker-compose victoria-metrics

.PHONY: demo test fuzz typecheck venv servers test-debs bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip >/dev/null
	$(BIN)/python -m pip install -q -e '.[test]'
	@# devtools/ is not installed (pyproject.toml): a .pth holding this checkout's root lets
	@# the venv import it from any directory, so `$(BIN)/citywatch bench` works anywhere.
	$(BIN)/python -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "citywatch-devtools.pth").write_text(sys.argv[1] + "\n")' "$(CURDIR)"
	@touch $@

venv: $(STAMP)

servers:
	@scripts/ensure-debs.sh $(SERVER_DEBS)

test-debs:
	@scripts/ensure-debs.sh $(TEST_DEBS)

## demo: servers under ./var/, the service with API and dashboard, simulators; Ctrl-C stops all
demo: venv servers
	$(BIN)/python -m devtools.demo

## test: real mosquitto and influxd on ephemeral ports, the whole suite (the type check and the
## import contract included: tests/test_types.py, tests/test_layers.py) in TEST_WORKERS
## pytest-xdist workers (each starts its own servers; tests share no ports, dirs or state).
## More workers than cores on purpose: most of the suite waits on servers, subprocesses and
## outages: on the shared 2-core box (loaded by other runs) 4 workers took 395 s and 526 s, 2
## workers 850 s, one process 1390 s.
## `make test TEST_WORKERS=0` runs it serially in one process.
TEST_WORKERS ?= 4
test: venv servers test-debs
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

## fuzz: the input parsers' property tests with new random examples (CW_FUZZ_EXAMPLES per test, default 5000)
fuzz: venv
	CW_FUZZ_EXPLORE=1 $(BIN)/python -m pytest -q tests/ingest/test_fuzz_inputs.py tests/hj212/test_hj212_fuzz.py

## typecheck: mypy as pyproject.toml [tool.mypy] says (strict on the core and ingest); also in `make test`
typecheck: venv
	$(BIN)/python -m mypy

bench: venv servers
	$(BIN)/citywatch bench --json var/bench.json

clean:
	rm -rf $(VENV) var .pytest_cache
