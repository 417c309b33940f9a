#!/bin/sh
# Rebuild the default knowledge-tracing package (engines/kt-default) from simulated students.
# Needs the train extra (torch). Deterministic apart from the "created" timestamp; takes ~1-2 min on 2 cores.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -c 'import sys; from edge_agent.kt.cli_kt import add_kt_parser; import argparse
p = argparse.ArgumentParser(); add_kt_parser(p.add_subparsers(dest="cmd"))
a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))' kt build-default --out engines/kt-default "$@"
