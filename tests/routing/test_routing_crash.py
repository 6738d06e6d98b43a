"""SIGKILL between a group's firing and its delivery: after a restart the group arrives
exactly once (a real child process, killed with SIGKILL; deliveries counted at the robot)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platforms import DingTalkRobot

HERE = Path(__file__).parent
RULE = """\
rules:
  - id: test_pm10_now
    kind: dust
    severity: major
    source: "test"
    when: {field: pm10, above: 150}
    message: {zh: "PM10 {value} {unit} 超过 {limit}", en: "PM10 {value} above {limit}"}
    action: {zh: "处置", en: "act"}
"""
ROUTES = """\
receivers:
  - {{name: dust-office, type: dingtalk, url: "{url}", secret: "{secret}"}}
route:
  receiver: dust-office
  group_by: [site]
  group_wait: {wait}
  group_interval: 2s
  repeat_interval: 4h
"""


def _query(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not there yet
        return []
    finally:
        con.close()


def _wait(cond, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _start(tmp: Path, routes: Path, rules: Path, phase: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(HERE / "crash_child.py"), str(tmp / "state"), str(routes),
                             str(rules), phase], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"running", proc.stderr.read().decode()
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _setup(tmp: Path, ding: DingTalkRobot, wait: str) -> tuple[Path, Path, Path]:
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULE, "utf-8")
    routes = tmp / "routes.yaml"
    routes.write_text(ROUTES.format(url=ding.url, secret=ding.secret, wait=wait), "utf-8")
    return rules, routes, tmp / "state" / "alerts.sqlite3"


@pytest.mark.slow
def test_sigkill_during_group_wait_then_restart_delivers_once(tmp_path):
    with DingTalkRobot() as ding:
        rules, routes, db = _setup(tmp_path, ding, "8s")
        child = _start(tmp_path, routes, rules, "fire")
        try:
            # The firing is recorded in its group; the group waits (group_wait 8 s): kill now.
            _wait(lambda: _query(db, "SELECT alert_id FROM route_group_alerts"), what="the group")
            _kill(child)
        finally:
            child.kill()
        assert ding.accepted == []
        child = _start(tmp_path, routes, rules, "resume")
        try:
            _wait(lambda: len(ding.accepted) >= 1, what="the delivery after restart")
            time.sleep(5)  # two more group_intervals: a duplicate would have come by now
        finally:
            child.kill()
            child.wait(timeout=10)
    assert ding.rejected == [] and len(ding.accepted) == 1
    assert "test_pm10_now · S0009/D00009" in ding.accepted[0].body["markdown"]["text"]


@pytest.mark.slow
def test_sigkill_with_the_group_queued_for_a_down_robot_then_restart_delivers_once(tmp_path):
    with DingTalkRobot(fail_with=503) as ding:
        rules, routes, db = _setup(tmp_path, ding, "0s")
        child = _start(tmp_path, routes, rules, "fire")
        try:
            # The group's message is in the outbox and its first attempt failed (503): kill.
            _wait(lambda: _query(db, "SELECT seq FROM outbox WHERE notifier='receiver:dust-office' "
                                     "AND attempts >= 1 AND delivered_ms IS NULL"), what="a failed attempt")
            _kill(child)
        finally:
            child.kill()
        assert ding.accepted == [] and ding.rejected
        ding.fail_with = 0  # the robot is back
        child = _start(tmp_path, routes, rules, "resume")
        try:
            _wait(lambda: len(ding.accepted) >= 1, what="the delivery after restart")
            time.sleep(5)
        finally:
            child.kill()
            child.wait(timeout=10)
    assert len(ding.accepted) == 1
    assert _query(db, "SELECT COUNT(*) FROM outbox WHERE notifier='receiver:dust-office' "
                      "AND delivered_ms IS NOT NULL") == [(1,)]
