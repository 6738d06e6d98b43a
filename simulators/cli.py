"""`citywatch simulate`: run a scenario against an MQTT broker, or list the scenarios.

Wired into the console script by app/cli.py through `add_arguments` and `run`.
Exit codes: 0 all messages acknowledged, 1 publishing failed, 2 bad scenario or arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from simulators.errors import PublishError, ScenarioError
from simulators.loadgen import LoadSpec, expected_messages, run_load
from simulators.pacing import parse_speed
from simulators.progress import ProgressLine
from simulators.publisher import MAX_INFLIGHT_LIMIT, PublishSummary
from simulators.scenario import describe_scenarios
from simulators.timeutil import parse_duration_s


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--scenario", default="normal-day", help="scenario name or path to a YAML file")
    parser.add_argument("--sites", type=int, default=10, help="number of sites (one device each)")
    parser.add_argument("--speed", default="max",
                        help="simulated seconds per real second; 0 or 'max' = as fast as possible (default)")
    parser.add_argument("--duration", default=None,
                        help="simulated duration, e.g. 3600, 90m, 6h (default: the scenario's)")
    parser.add_argument("--start", default=None,
                        help="simulated start, local ISO time (default: the scenario's)")
    parser.add_argument("--rate", type=float, default=None, help="cap on messages per second, all processes")
    parser.add_argument("--seed", type=int, default=1, help="random seed; same seed, same messages")
    parser.add_argument("--processes", type=int, default=1, help="publisher processes (load generator)")
    parser.add_argument("--protocol", choices=["mqtt", "hj212"], default="mqtt",
                        help="mqtt (scenario fleets) or hj212 (dust monitors over TCP to the gateway)")
    parser.add_argument("--hj212", metavar="HOST:PORT", default=None,
                        help="with --protocol hj212: the gateway (default CW_HJ212_LISTEN or 127.0.0.1:9212)")
    parser.add_argument("--packets", type=int, default=10, help="with --protocol hj212: packets per monitor")
    parser.add_argument("--dialect", default="2017",
                        help="with --protocol hj212: what the monitors speak: 2017, 2025, 2005, tianjin, no-crlf, "
                             "len+6, split (see simulators/README.md)")
    parser.add_argument("--write-registry", metavar="FILE", default=None,
                        help="with --protocol hj212: write the generated fleet's device registry (TOML)")
    parser.add_argument("--client-id", default="", help="client id prefix (default citywatch-sim-<pid>)")
    parser.add_argument("--max-inflight", type=int, default=10_000,
                        help=f"unacknowledged messages per process (<= {MAX_INFLIGHT_LIMIT})")
    parser.add_argument("--connect-timeout", type=float, default=30.0,
                        help="seconds to wait for the broker before giving up")
    parser.add_argument("--ca-file", default=None,
                        help="mqtts://: CA certificate that signed the broker's (default CW_MQTT_CA_FILE)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _spec(args: argparse.Namespace, mqtt_url: str) -> LoadSpec:
    if args.sites < 1 or args.processes < 1:
        raise ScenarioError("--sites and --processes must be at least 1")
    if args.rate is not None and args.rate <= 0:
        raise ScenarioError("--rate must be positive")
    try:
        speed = parse_speed(args.speed)
    except ValueError as exc:
        raise ScenarioError(f"--speed: {exc}") from exc
    return LoadSpec(
        scenario=args.scenario, sites=args.sites, seed=args.seed, url=mqtt_url,
        duration_s=parse_duration_s(args.duration) if args.duration is not None else None,
        start=args.start, speed=speed, rate=args.rate, processes=args.processes,
        client_id_prefix=args.client_id, max_inflight=args.max_inflight,
        connect_timeout_s=args.connect_timeout, ca_file=getattr(args, "ca_file", None),
    )


def format_summary(summary: PublishSummary) -> str:
    rate = summary.sent / summary.seconds if summary.seconds else 0.0
    lines = [f"sent {summary.sent:,} messages, {summary.acked:,} acknowledged, in {summary.seconds:,.1f} s "
             f"({rate:,.0f} msg/s), {summary.reconnects} reconnects"]
    lines.append("by kind: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.by_kind.items())))
    if summary.faults:
        lines.append("faults: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.faults.items())))
    return "\n".join(lines)


def run(args: argparse.Namespace, mqtt_url: str, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if args.list:
        for name, description in describe_scenarios():
            print(f"{name:18} {description}", file=out)
        return 0
    if getattr(args, "protocol", "mqtt") == "hj212":
        import os
        from pathlib import Path

        from simulators.hj212 import run_hj212

        args.hj212 = args.hj212 or os.environ.get("CW_HJ212_LISTEN")
        devices = os.environ.get("CW_DEVICES_FILE")
        return run_hj212(args, devices_file=Path(devices) if devices and not args.write_registry else None)
    try:
        spec = _spec(args, mqtt_url)
        bar = None if args.no_progress else ProgressLine(total=expected_messages(spec), stream=err)
        summary = run_load(spec, on_progress=bar.update if bar else None)
        if bar:
            bar.done()
    except ScenarioError as exc:
        print(f"simulate: {exc}", file=err)
        return 2
    except PublishError as exc:
        print(f"\nsimulate: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("\nsimulate: interrupted", file=err)
        return 130
    if args.json:
        print(json.dumps({"sent": summary.sent, "acked": summary.acked, "by_kind": summary.by_kind,
                          "faults": summary.faults, "seconds": round(summary.seconds, 3),
                          "reconnects": summary.reconnects}), file=out)
    else:
        print(format_summary(summary), file=out)
    return 0 if summary.acked >= summary.sent else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m simulators.cli`) until app/cli.py wires it in."""
    import os

    parser = argparse.ArgumentParser(prog="citywatch simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--mqtt-url", default=os.environ.get("CW_MQTT_URL", "mqtt://127.0.0.1:1883"))
    add_arguments(parser)
    parser.set_defaults(ca_file=os.environ.get("CW_MQTT_CA_FILE"))
    args = parser.parse_args(argv)
    return run(args, args.mqtt_url)


if __name__ == "__main__":
    raise SystemExit(main())
