"""`edge-agent kt ...`: train a model package from an answer log, or rebuild the default package.

torch is imported only inside the handlers (the ``train`` extra), so the CLI loads without it.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edge_agent.errors import EdgeAgentError


def add_kt_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    kt = subparsers.add_parser("kt", help="knowledge-tracing models")
    sub = kt.add_subparsers(dest="kt_command", required=True)
    train = sub.add_parser("train", help="train a model package from an answer log (needs the train extra)")
    train.add_argument("--format", choices=("dkt-csv", "pykt-csv"), default="dkt-csv")
    train.add_argument("--train", type=Path, required=True, help="answer log to train on")
    train.add_argument("--test", type=Path, help="held-out students (default: 20%% of --train)")
    train.add_argument("--out", type=Path, required=True, help="package directory to write")
    _train_options(train, epochs=10, hidden=96)
    train.set_defaults(func=cmd_kt_train)
    default = sub.add_parser("build-default", help="rebuild engines/kt-default from simulated students")
    default.add_argument("--out", type=Path, required=True)
    default.add_argument("--students", type=int, default=8000)
    _train_options(default, epochs=15, hidden=64)
    default.set_defaults(func=cmd_kt_build_default)
    return kt


def _train_options(parser: argparse.ArgumentParser, epochs: int, hidden: int) -> None:
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--hidden", type=int, default=hidden)
    parser.add_argument("--seed", type=int, default=0)


def _options(args: argparse.Namespace, embed: int) -> object:
    from edge_agent.kt.train import TrainOptions

    return TrainOptions(hidden=args.hidden, embed=embed, epochs=args.epochs, seed=args.seed)


def cmd_kt_train(args: argparse.Namespace) -> int:
    try:
        from edge_agent.kt.build import build_from_sequences
        from edge_agent.kt.data import read_sequences
    except ImportError as exc:
        print(f"training needs the train extra (pip install 'edge-agent[train]'): {exc}")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        train = read_sequences(args.train, args.format)
        test = read_sequences(args.test, args.format) if args.test else None
        result = build_from_sequences(train, test, args.out, _options(args, 64))  # type: ignore[arg-type]
    except (EdgeAgentError, ValueError) as exc:
        print(f"error: {exc}")
        return 1
    print(json.dumps(result))
    return 0


def cmd_kt_build_default(args: argparse.Namespace) -> int:
    try:
        from edge_agent.kt.build import build_default
    except ImportError as exc:
        print(f"building the default package needs the train extra: {exc}")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = build_default(args.out, students=args.students, opts=_options(args, 32))  # type: ignore[arg-type]
    print(json.dumps(result))
    return 0
