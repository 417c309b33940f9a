#!/usr/bin/env bash
# Set up, then run the daemon on its embedded defaults with a simulated classroom (Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
export EDGE_AGENT_MODEL_MIRROR="${EDGE_AGENT_MODEL_MIRROR:-$(cd .. && pwd)/shared/models}"
exec .venv/bin/edge-agent demo "$@"
