"""``edge-agent bench``: every benchmark and the lesson scenario in one go (see benchmarks/run_all.py).

The benchmark code lives in the repository's benchmarks/ folder, not in the package, so the daemon never
imports it; this module only finds and runs it. It therefore needs a source checkout.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load_runner() -> ModuleType | None:
    script = BENCHMARKS / "run_all.py"
    if not script.is_file():
        return None
    spec = importlib.util.spec_from_file_location("edge_agent_bench_run_all", script)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cmd_bench(args: argparse.Namespace) -> int:
    runner = _load_runner()
    if runner is None:
        print(
            f"edge-agent bench needs a source checkout: {BENCHMARKS / 'run_all.py'} is missing "
            "(clone the repository and install it with `pip install -e .[dev]`)",
            file=sys.stderr,
        )
        return 2
    return int(runner.run(args))


def add_bench_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench", help="run every benchmark and the lesson scenario; print medians, p99s, ratios, targets"
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts and a 45 s lesson")
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=0.0,
        help="also run the lesson scenario this long (30 for the real soak)",
    )
    parser.add_argument(
        "--soak-raw", help="report an earlier soak (its soak-raw.json) instead of running one"
    )
    parser.add_argument(
        "--lesson-seconds", type=float, help="length of the lesson scenario (default 180, quick 45)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["kt", "vision", "engines", "lesson", "soak"],
        help="run only these parts",
    )
    parser.add_argument("--out", default="artifacts/bench", help="results, raw data and PNG plots go here")
    parser.set_defaults(func=cmd_bench)
