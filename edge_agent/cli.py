"""The ``edge-agent`` command: parses arguments, calls into the package, prints, returns an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_agent import __build__, __version__
from edge_agent.argument_types import at_least
from edge_agent.config import (
    ConfigError,
    find_config_path,
    ignored_key_line,
    load_config,
    load_config_for_command,
    load_config_ignoring_unknown,
    masked_dump,
    to_toml,
    unreadable_config,
)


def _cmd_config_check(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else find_config_path(args.config)
    problems = []
    try:
        load_config(path, check_files_exist=not args.no_files)
    except ConfigError as exc:
        problems = list(exc.problems)
    if not args.no_files and (unreadable := unreadable_config(path)):
        problems.insert(0, (str(path), unreadable))
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for where, message in problems:
            print(f"  {where}: {message}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def _cmd_config_show(args: argparse.Namespace) -> int:
    path = find_config_path(args.config)
    try:
        config = load_config_for_command(path)
    except ConfigError as exc:
        for where, message in exc.problems:
            print(f"{where}: {message}", file=sys.stderr)
        return 1
    data = masked_dump(config)
    print(json.dumps(data, indent=2, ensure_ascii=False) if args.json else to_toml(data))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    # Until the daemon's loop takes SIGHUP as a reload, its default would end the process, which
    # Restart=on-failure takes for a clean end: a reload signal during the start left the board off
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from edge_agent.assembly import run_daemon
    from edge_agent.core_dumps import forbid_core_dumps
    from edge_agent.logs import configure_logging

    path = find_config_path(args.config)
    try:
        config, ignored = load_config_ignoring_unknown(path)
    except ConfigError as exc:
        # Print every problem before systemd sees the failure: the journal shows this as the reason.
        print(f"edge-agent: cannot start, {path} is invalid:", file=sys.stderr)
        for where, message in exc.problems:
            print(f"  {where}: {message}", file=sys.stderr)
        return 1
    configure_logging(config.logging.level, config.logging.format)
    os.umask(0o077)  # the database, models and logs are the daemon's alone (the unit's UMask= does the same)
    forbid_core_dumps()  # camera frames in memory must never reach a core file
    unknown = (f"is not a key edge-agent {__version__} knows; ignored. A typo (see README 'Config "
               "reference'), or a newer release's key after a rollback")
    for key in ignored:
        logging.getLogger("edge_agent.config").warning("config %s: %s", path, ignored_key_line(key, unknown))
    from edge_agent.daemon import leave, run_to_exit

    return leave(run_to_exit(run_daemon(config, path)))


def _cmd_demo(args: argparse.Namespace) -> int:
    from edge_agent.core_dumps import forbid_core_dumps
    from edge_agent.demo import run_demo

    forbid_core_dumps()  # the demo runs the daemon, on a real camera with --camera (a review: no core limit)
    # as `run`: its databases hold pseudonyms and learning states (a review: they were 0644)
    os.umask(0o077)
    return run_demo(args)


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return port


def _demo_seconds(text: str) -> float:
    """0 (until Ctrl-C) or more seconds: float() takes "-1" and "nan": the demo stopped at once, exit 0."""
    value = float(text)
    if not 0 <= value < float("inf"):  # false for nan too
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds, 0 or more (0: until Ctrl-C)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description="Classroom edge runtime for class boards."
    )
    parser.add_argument(
        "--version", action="version", version=f"edge-agent {__version__} (build {__build__})"
    )
    parser.add_argument(
        "--config", help="config file (default: $EDGE_AGENT_CONFIG, then /etc/edge-agent/config.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # --config is accepted before or after the subcommand (`edge-agent run --config X` in the unit file).
    with_config = argparse.ArgumentParser(add_help=False)
    with_config.add_argument("--config", default=argparse.SUPPRESS, help="config file")

    run = sub.add_parser("run", help="run the daemon (what systemd starts)", parents=[with_config])
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="run the full daemon on embedded defaults with a simulated classroom")
    demo.add_argument(
        "--state-dir", default="demo-state", help="where the demo keeps its state (default ./demo-state)"
    )
    demo.add_argument("--port", type=_port, default=8080, help="teacher view port on localhost")
    demo.add_argument("--metrics-port", type=_port, default=9108)
    demo.add_argument("--camera", help="camera source; default: ../shared/data/faces if present")
    demo.add_argument(
        "--duration", type=_demo_seconds, default=0.0, help="stop after this many seconds (0: until Ctrl-C)"
    )
    demo.add_argument("--students", type=at_least(1), default=30, help="simulated students in the class")
    demo.set_defaults(func=_cmd_demo)

    config = sub.add_parser("config", help="check or show the configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser(
        "check", help="validate a config file; exit 0 if valid, 1 if not", parents=[with_config]
    )
    check.add_argument("path", nargs="?", help="config file (default: the one `run` would use)")
    check.add_argument("--no-files", action="store_true", help="skip checks of secret and certificate files")
    check.set_defaults(func=_cmd_config_check)
    show = config_sub.add_parser(
        "show", help="print the effective config, secrets masked", parents=[with_config]
    )
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_cmd_config_show)

    _mount_feature_parsers(sub)
    return parser


def _mount_feature_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge_agent.cli_bench import add_bench_parser
    from edge_agent.doctor import add_doctor_parser
    from edge_agent.inference.cli_engines import add_engines_parser
    from edge_agent.kt.cli_kt import add_kt_parser
    from edge_agent.provisioning.cli import add_model_parser, add_provision_parser
    from edge_agent.vision.cli_attention import add_attention_parser
    from edge_agent.web.clients import add_web_parser

    for add in (
        add_engines_parser,
        add_kt_parser,
        add_attention_parser,
        add_doctor_parser,
        add_provision_parser,
        add_model_parser,
        add_bench_parser,
        add_web_parser,
    ):
        add(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edge-agent ... | head` closed the pipe: not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
