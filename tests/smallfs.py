"""A small real filesystem for disk-full tests: a tmpfs the test mounts (as root) and
unmounts afterwards, and a filler that takes the free space as another program would.

Mounting needs root (or CAP_SYS_ADMIN). Where that is impossible the test fails and says
why — it never skips: a disk-full test that silently does not run proves nothing."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_fs(path: Path, size_bytes: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot mount a {size_bytes // 1024} KiB tmpfs on {path}: {(r.stderr or r.stdout).strip()}. "
                    "The disk-full tests need a small real filesystem; run them as root (or with CAP_SYS_ADMIN).",
                    pytrace=False)
    try:
        yield path
    finally:
        u = subprocess.run(["umount", str(path)], capture_output=True, text=True)
        if u.returncode != 0:  # something still has a file open there: detach it anyway
            subprocess.run(["umount", "-l", str(path)], capture_output=True, text=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path: Path, *, leave: int = 0, name: str = "filler") -> Path:
    """Take all free space under `path` but `leave` bytes (another program filling the disk)."""
    target = path / name
    chunk = b"\0" * 65536
    with open(target, "ab") as f:
        while True:
            room = free_bytes(path) - leave
            if room <= 0:
                break
            try:
                f.write(chunk[:min(len(chunk), room)])
                f.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return target
