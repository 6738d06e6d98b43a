"""The `citywatch` command: run, simulate, bench, deadletters, hj212, rules."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from datetime import datetime
from zoneinfo import ZoneInfo

from citywatch.errors import CitywatchError
from citywatch.logs import setup_logging
from citywatch.settings import Settings


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.disk import check_data_dir
    from ingest.workers import start_ingest_processes

    check_data_dir(settings)  # a data dir too small for one spool segment above the pause threshold: exit 2

    # The ingest process first: it needs nothing from this one to connect and drain the
    # broker, and its start-up then overlaps with the imports and set-up below.
    workers = start_ingest_processes(settings, forward=settings.alerts_enabled)
    try:
        from ingest.service import run_service
    except BaseException:
        if workers is not None:
            workers.stop()
        raise
    asyncio.run(run_service(settings, workers=workers))
    return 0


def _cmd_deadletters_list(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.deadletters import DeadLetterStore

    store = DeadLetterStore(settings.deadletter_path)
    items = store.list(limit=args.limit, include_replayed=args.all)
    if args.json:
        json.dump([d.to_json() for d in items], sys.stdout, ensure_ascii=False, indent=1)
        sys.stdout.write("\n")
        return 0
    tz = ZoneInfo(settings.tz)
    if not items:
        print("no dead letters" + ("" if args.all else " waiting (use --all to include replayed ones)"))
    for d in items:
        when = datetime.fromtimestamp(d.received_ms / 1000, tz).strftime("%Y-%m-%d %H:%M:%S")
        state = " [replayed]" if d.replayed_ms else ""
        print(f"#{d.id} {when} {d.source} {d.topic[:80]} ({len(d.payload)} bytes){state}")
        for r in d.reasons:
            print(f"    - {r}")
    total = store.count(include_replayed=args.all)
    if total > len(items):
        print(f"... {total - len(items)} more (use --limit)")
    return 0


def _cmd_deadletters_replay(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.replay import replay_deadletters

    result = replay_deadletters(settings, dry_run=args.dry_run)
    print(f"replayed {result.accepted} message(s) into the spool; {result.still_rejected} still rejected"
          + (" (dry run: nothing changed)" if args.dry_run else ""))
    if result.accepted and not args.dry_run:
        print("the readings reach InfluxDB with the next `citywatch run` (or now, if it is running)")
    return 0


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from simulators import cli as sim_cli

    return sim_cli.run(args, settings.mqtt_url.get_secret_value())


def _cmd_hj212(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.service import run_service

    # On its own, the gateway keeps a spool of its own so it can run beside `citywatch run`.
    own = settings.model_copy(update={"data_dir": args.data_dir or settings.data_dir / "hj212-gateway"})
    asyncio.run(run_service(own, hj212_listen=args.listen, mqtt=False, alerts=False, api=False))
    return 0


def _cmd_rules_check(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.rules import rules_check

    args.dir = args.dir or settings.rules_dir
    return rules_check(args)


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from citywatch.bench import run_bench

    return run_bench(args, settings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="citywatch", description="Telemetry ingest and alerting for city supervision.")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default from CW_LOG_LEVEL or INFO)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the service (ingest, alerts, API) in the foreground")
    run.set_defaults(func=_cmd_run)

    dl = sub.add_parser("deadletters", help="inspect and replay rejected messages")
    dls = dl.add_subparsers(dest="action", required=True)
    ls = dls.add_parser("list", help="list dead letters with their reasons")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--all", action="store_true", help="include ones already replayed")
    ls.set_defaults(func=_cmd_deadletters_list)
    rp = dls.add_parser("replay", help="run dead letters through the current validation again")
    rp.add_argument("--dry-run", action="store_true")
    rp.set_defaults(func=_cmd_deadletters_replay)

    sim = sub.add_parser("simulate", help="publish simulated device traffic over MQTT")
    try:
        from simulators import cli as sim_cli

        sim_cli.add_arguments(sim)
    except ImportError:  # pragma: no cover - the simulators package is part of the install
        pass
    sim.set_defaults(func=_cmd_simulate)

    hj = sub.add_parser("hj212", help="run the HJ 212 TCP gateway on its own (spool + InfluxDB writer)")
    hj.add_argument("--listen", required=True, metavar="HOST:PORT", help="e.g. 0.0.0.0:9212")
    hj.add_argument("--data-dir", type=Path, default=None, help="its spool (default CW_DATA_DIR/hj212-gateway)")
    hj.set_defaults(func=_cmd_hj212)

    rules = sub.add_parser("rules", help="alert rules")
    rules_sub = rules.add_subparsers(dest="action", required=True)
    check = rules_sub.add_parser("check", help="validate the shipped rule packs and CW_RULES_DIR")
    check.add_argument("--dir", type=Path, default=None, help="an extra rules directory to check")
    check.set_defaults(func=_cmd_rules_check)

    bench = sub.add_parser("bench", help="measure ingest throughput, latency and cost against a baseline")
    bench.add_argument("--quick", action="store_true", help="finish within 60 s")
    bench.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    bench.add_argument("--readings", type=int, default=None, help="readings for the capacity run")
    bench.add_argument("--outage", type=int, default=None, metavar="N",
                       help="long-outage mode: N readings spooled with InfluxDB stopped, then drained (readings/s, "
                            "RSS during the drain, lost); --readings sets the reference capacity run (200,000)")
    bench.add_argument("--workers", type=int, default=1,
                       help="CW_INGEST_WORKERS for the measured service (default 1, the default setting)")
    bench.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load()
        setup_logging(args.log_level or settings.log_level, settings.log_format)
        return int(args.func(args, settings) or 0)
    except CitywatchError as exc:
        print(f"citywatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
