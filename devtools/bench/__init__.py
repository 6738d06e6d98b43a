"""`citywatch bench` (being split into modules along its seams)."""

from devtools.bench.standard import run_bench

__all__ = ["run_bench"]
