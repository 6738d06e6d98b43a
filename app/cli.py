"""The `citywatch` command: run, simulate, bench, deadletters, hj212, rules, routes, report."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from datetime import datetime
from zoneinfo import ZoneInfo

from app.preflight import check_rule_pack
from citywatch.errors import CitywatchError, ConfigError
from citywatch.logs import scrub, setup_logging
from citywatch.settings import Settings, parse_listen


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.disk import check_data_dir
    from ingest.workers import start_ingest_processes

    # Every setting is checked before any process or connection starts: a bad one ends
    # here with status 2 and nothing left behind (a started ingest child would otherwise
    # keep the interpreter waiting for it at exit).
    from app.preflight import preflight
    from ingest.service import check_hj212_startup

    preflight(settings)
    if settings.hj212_listen:
        check_hj212_startup(settings, settings.hj212_listen)
    if settings.routes_file is not None and settings.alerts_enabled:
        # The route file's file:line: reason lines (build_alerting loads it again, for use).
        from alerts.routing.config import load_routes

        try:
            load_routes(settings.routes_file)
        except CitywatchError as exc:
            raise type(exc)(f"CW_ROUTES_FILE: {exc}") from None
    check_data_dir(settings)  # a data dir too small for one spool segment above the pause threshold: exit 2
    # The ingest process first: it needs nothing from this one to connect and drain the
    # broker, and its start-up then overlaps with the imports and set-up below.
    workers = start_ingest_processes(settings, forward=settings.alerts_enabled)
    try:
        from app.service import run

        asyncio.run(run(settings, workers=workers))
    finally:
        if workers is not None:
            workers.stop()  # no-op when run_service stopped them already
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

    if getattr(args, "ca_file", None) is None and settings.mqtt_ca_file is not None:
        args.ca_file = str(settings.mqtt_ca_file)
    return sim_cli.run(args, settings.mqtt_url.get_secret_value())


def _cmd_hj212(args: argparse.Namespace, settings: Settings) -> int:
    from app.service import run

    # On its own, the gateway keeps a spool of its own so it can run beside `citywatch run`.
    own = settings.model_copy(update={"data_dir": args.data_dir or settings.data_dir / "hj212-gateway"})
    try:
        parse_listen(args.listen)
    except ValueError as exc:
        raise ConfigError(f"--listen: {exc}") from None
    asyncio.run(run(own, hj212_listen=args.listen, mqtt=False, alerts=False, api=False))
    return 0


def _cmd_rules_check(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.rules import rules_check

    args.dir = args.dir or settings.rules_dir
    args.pack = args.pack or settings.rule_pack
    return rules_check(args)


def _cmd_report_six100(args: argparse.Namespace, settings: Settings) -> int:
    from api.report import run_report

    return run_report(args, settings)


def _cmd_routes_check(args: argparse.Namespace, settings: Settings) -> int:
    from alerts.routing.check import routes_check
    from alerts.rules import load_rules
    from citywatch.schema import load_kinds

    # Rule ids and kinds as `citywatch run` would load them, to flag matches that name none.
    rules = set(load_rules(settings.rules_dir, pack=settings.rule_pack))
    return routes_check(args.file or settings.routes_file, rules=rules, kinds=set(load_kinds()))


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    # The benchmark lives in devtools/, a folder of the source checkout that is not
    # installed (it starts servers and baselines a production install has no use for).
    try:
        from devtools.bench import run_bench
    except ModuleNotFoundError as exc:
        if exc.name not in ("devtools", "devtools.bench"):
            raise  # a dependency missing inside devtools is a different fault: show it
        print("citywatch bench: a developer tool of the source checkout (devtools/), not part of "
              "an installed service; run `make bench` in a citywatch checkout", file=sys.stderr)
        return 2
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
    check.add_argument("--pack", default=None, help="a regional rule pack to check (default CW_RULE_PACK)")
    check.set_defaults(func=_cmd_rules_check)

    report = sub.add_parser("report", help="compliance reports")
    report_sub = report.add_subparsers(dest="report", required=True)
    six = report_sub.add_parser("six100", help="六个百分百 daily or monthly report as XLSX (or CSV) from InfluxDB")
    six.add_argument("--date", help="local day YYYY-MM-DD (CW_TZ): one sheet plus 明细")
    six.add_argument("--month", help="local month YYYY-MM: a month summary, one sheet per day, 明细")
    six.add_argument("--site", default=None, help="one site only")
    six.add_argument("--format", choices=("xlsx", "csv"), default="xlsx")
    six.add_argument("--out", default=None, help="output file (default 六个百分百-<date or month>.<format>)")
    six.add_argument("--rebuild", action="store_true",
                     help="rebuild the kept evidence of local days --from D --to D from InfluxDB (progress bar)")
    six.add_argument("--from", dest="date_from", metavar="D", help="first local day YYYY-MM-DD of --rebuild")
    six.add_argument("--to", dest="date_to", metavar="D", help="last local day YYYY-MM-DD of --rebuild")
    six.set_defaults(func=_cmd_report_six100)

    routes = sub.add_parser("routes", help="alert routing (CW_ROUTES_FILE)")
    routes_sub = routes.add_subparsers(dest="action", required=True)
    rcheck = routes_sub.add_parser("check", help="validate a route file without starting anything")
    rcheck.add_argument("file", type=Path, nargs="?", default=None, help="the route file (default CW_ROUTES_FILE)")
    rcheck.set_defaults(func=_cmd_routes_check)

    bench = sub.add_parser("bench", help="measure ingest throughput, latency and cost against a baseline")
    bench.add_argument("--quick", action="store_true", help="finish within 60 s")
    bench.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    bench.add_argument("--readings", type=int, default=None, help="readings for the capacity run")
    bench.add_argument("--tls", action="store_true",
                       help="the capacity run over plain MQTT and over TLS, side by side (the cost of TLS)")
    bench.add_argument("--outage", type=int, default=None, metavar="N",
                       help="long-outage mode: N readings spooled with InfluxDB stopped, then drained (readings/s, "
                            "RSS during the drain, lost); --readings sets the reference capacity run (200,000)")
    bench.add_argument("--workers", type=int, default=1,
                       help="CW_INGEST_WORKERS for the measured service (default 1, the default setting)")
    bench.add_argument("--query", action="store_true",
                       help="query mode: p50/p99 of each dashboard route on a generated city (devtools/bench/query.py)")
    for flag, default, what in (("--sites", 1000, "sites"), ("--monitors", 1, "dust monitors per site"),
                                ("--days", 365, "days of kept six-100 evidence"),
                                ("--raw-days", 1, "last days also as raw points in InfluxDB"),
                                ("--interval", 30, "seconds between raw points"),
                                ("--requests", 20, "warm requests per route")):
        bench.add_argument(flag, type=int, default=default, help=f"--query: {what} (default {default})")
    bench.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load()
        check_rule_pack(settings)  # before any command: a pack that does not ship is a typo
        setup_logging(args.log_level or settings.log_level, settings.log_format)
        return int(args.func(args, settings) or 0)
    except CitywatchError as exc:
        for line in scrub(str(exc)).splitlines() or [type(exc).__name__]:
            print(f"citywatch: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
