"""Which run `citywatch bench` makes: one entry per mode in `MODES`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from devtools.bench.outage import run_outage_bench
from devtools.bench.query import run_query_bench
from devtools.bench.standard import run_standard_bench
from devtools.bench.tls import run_tls_bench

# (the `citywatch bench` option that selects a mode, the function that runs it). A new mode
# is its module and one line here; the first whose option is set wins, with none set the
# standard run (`--quick` or full).
MODES: list[tuple[str, Callable[[argparse.Namespace], int]]] = [
    ("tls", run_tls_bench),
    ("outage", run_outage_bench),
    ("query", run_query_bench),
]


def run_bench(args: argparse.Namespace, settings: Any = None) -> int:
    """`settings` is accepted for the CLI's handler signature; each run defines its own."""
    for option, run in MODES:
        if getattr(args, option, None):
            return run(args)
    return run_standard_bench(args)
