#!/bin/sh
# Provision this board (run as root on the board) or target roots; all arguments go to
# `edge-agent-provision` (see provisioning/README.md). Uses the installed venv when there is one.
set -eu
PY=/opt/edge-agent/venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" -m edge_agent.provisioning "$@"
