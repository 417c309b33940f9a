#!/usr/bin/env bash
# The suite on Python 3.10, the version JetPack 6 ships (with the onnxruntime release that still
# supports it), minus the parts that need torch or run long: they ran on the main interpreter already.
set -euo pipefail
cd "$(dirname "$0")/.."
py=""
for candidate in python3.10 "$HOME/.pyenv/versions/3.10"*/bin/python3.10 /usr/bin/python3.10; do
  if [ -x "$(command -v "$candidate" 2>/dev/null || echo "$candidate")" ] &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then
    py="$candidate"; break
  fi
done
if [ -z "$py" ]; then
  echo "== Python 3.10 not found: compatibility run skipped"
  exit 0
fi
echo "== Python 3.10 compatibility run ($("$py" --version))"
[ -x .venv310/bin/python ] || "$py" -m venv .venv310
.venv310/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
export EDGE_AGENT_MODEL_MIRROR="${EDGE_AGENT_MODEL_MIRROR:-$(cd .. && pwd)/shared/models}"
# Like the e2e kill loop and the benchmarks, the slow install.sh test (real venvs) runs once, above.
.venv310/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/bench --ignore=tests/e2e -m "not slow" "$@"
