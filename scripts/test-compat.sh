#!/usr/bin/env bash
# The suite on another Python: 3.10 by default, the version JetPack 6 ships (with the onnxruntime release
# that still supports it); PYVER=3.12 for the newest one supported. Minus the parts that need torch or
# run long: they ran on the main interpreter already (but for those marked second_python).
set -euo pipefail
cd "$(dirname "$0")/.."
ver="${PYVER:-3.10}"
py="$(bash scripts/find-python.sh "$ver")" || true
if [ -z "$py" ]; then
  echo "== Python $ver not found: compatibility run skipped"
  exit 0
fi
echo "== Python $ver compatibility run ($("$py" --version))"
venv=".venv${ver//./}"
# made anew when an earlier try left it without pip (a Python without ensurepip: see setup.sh)
"$venv/bin/python" -m pip --version >/dev/null 2>&1 || "$py" -m venv --clear "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
export EDGE_AGENT_MODEL_MIRROR="${EDGE_AGENT_MODEL_MIRROR:-$(cd .. && pwd)/shared/models}"
# Like the benchmarks, slow tests run once, in the main run; but those marked second_python (the e2e
# kill loop among them) run here instead (test.sh leaves them out there), to balance the two runs' times.
"$venv/bin/python" -m pytest -q -p no:cacheprovider -n "${EDGE_AGENT_TEST_WORKERS:-2}" --dist loadfile \
  --ignore=tests/bench \
  --durations=15 -m "not slow or second_python" "$@"
