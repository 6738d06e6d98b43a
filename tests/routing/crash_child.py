"""A child process for the SIGKILL test: the alert engine with routing, as `citywatch run`
wires it (alerts.build.build_alerting), on a state directory given by the test.

    python crash_child.py STATE_DIR ROUTES_FILE RULES_DIR fire|resume

`fire` feeds one reading that fires a rule, then runs; `resume` only runs (a restart).
Prints "running" once the tasks have started. Runs until killed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from alerts.build import build_alerting
from citywatch.model import Reading


async def main(state_dir: Path, routes_file: Path, rules_dir: Path, phase: str) -> None:
    settings = SimpleNamespace(rule_pack="default", rules_dir=rules_dir, alert_state_path=state_dir / "alerts.sqlite3",
                               tz="Asia/Shanghai", routes_file=routes_file, dashboard_url="https://dash.example/",
                               data_dir=state_dir)
    engine, tasks = build_alerting(settings, mqtt=False)
    if phase == "fire":
        engine.process_readings([Reading("dust", "S0009", "D00009", int(time.time() * 1000), {"pm10": 300.0})])
    async with asyncio.TaskGroup() as tg:
        for coro in tasks:
            tg.create_task(coro)
        await asyncio.sleep(0)
        print("running", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]))
