#!/usr/bin/env bash
# The suite on another Python: 3.10 by default, the version JetPack 6 ships (with the onnxruntime release
# that still supports it); PYVER=3.12 for the newest one supported. Minus the parts that need torch or
# run long: they ran on the main interpreter already.
set -euo pipefail
cd "$(dirname "$0")/.."
ver="${PYVER:-3.10}"
py=""
for candidate in "python$ver" "$HOME/.pyenv/versions/$ver"*/bin/"python$ver" "/usr/bin/python$ver"; do
  if [ -x "$(command -v "$candidate" 2>/dev/null || echo "$candidate")" ] &&
     "$candidate" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$ver')" 2>/dev/null; then
    py="$candidate"; break
  fi
done
if [ -z "$py" ]; then
  echo "== Python $ver not found: compatibility run skipped"
  exit 0
fi
echo "== Python $ver compatibility run ($("$py" --version))"
venv=".venv${ver//./}"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]"
export EDGE_AGENT_MODEL_MIRROR="${EDGE_AGENT_MODEL_MIRROR:-$(cd .. && pwd)/shared/models}"
# Like the e2e kill loop and the benchmarks, the slow install.sh test (real venvs) runs once, above.
"$venv/bin/python" -m pytest -q -p no:cacheprovider --ignore=tests/bench --ignore=tests/e2e -m "not slow" "$@"
