#!/usr/bin/env bash
# Create .venv and install edge-agent with its test and training extras; `setup.sh demo` installs only
# what the daemon itself needs (the demo: no torch, no test tools). Idempotent and quick when nothing
# changed (a stamp keyed by pyproject.toml's hash).
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"

pick_python() {
  # 3.11 first: the CPU build of torch that the training tests use is published for it.
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)'; then
      echo "$candidate"; return 0
    fi
  done
  echo "edge-agent needs Python 3.10, 3.11 or 3.12 (JetPack 6 ships 3.10)" >&2
  return 1
}

stamp=.venv/.edge-agent-installed
runtime_stamp=.venv/.edge-agent-runtime-installed
want="$(sha256sum pyproject.toml | cut -c1-16)"
stamped() { [ -f "$1" ] && [ "$(cat "$1")" = "$want" ]; }
if stamped "$stamp" || { [ "$mode" = demo ] && stamped "$runtime_stamp"; }; then
  exit 0
fi

python=$(pick_python)
# A venv made where Python's venv module lacks ensurepip (Debian and Ubuntu without python3-venv) has a
# python but no pip: made anew, or installing python3-venv as Python's message says would not mend it
# (on a fresh Ubuntu 22.04 the second try failed "No module named pip").
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  if ! "$python" -m venv --clear .venv; then
    rm -rf .venv
    version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    echo "$python cannot make a virtual environment: on Debian or Ubuntu install its venv module" \
      "(as root: apt-get install python$version-venv), then run this again" >&2
    exit 1
  fi
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
if [ "$mode" = demo ]; then
  "${pip[@]}" -e .
  echo "$want" > "$runtime_stamp"
  exit 0
fi
# Training tests need torch, the CPU build: PyPI's Linux torch is the CUDA one (several GB of nvidia-*
# wheels), so this machine's own wheel (pip's find-links) where it has one, else PyTorch's CPU index, and
# PyPI's only where neither answers. No retries for the CPU index: where it cannot be reached (as from
# our machines) pip retried it for each of torch's dependencies, 3m54s before taking PyPI's.
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  if "${pip[@]}" --dry-run --no-deps --no-index "torch==2.13.0" >/dev/null 2>&1; then
    "${pip[@]}" "torch==2.13.0"
  else
    "${pip[@]}" --retries 0 --timeout 20 --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple torch || "${pip[@]}" torch
  fi
fi
"${pip[@]}" -e ".[dev,train,quantize]"
# Type stubs for the static TensorRT check; --no-deps because tensorrt itself cannot install here.
"${pip[@]}" --no-deps "tensorrt-stubs==10.13.*" 2>/dev/null || "${pip[@]}" --no-deps tensorrt-stubs
# The browser tests drive Debian's chromium; where there is none (Ubuntu's is a snap), Playwright's own,
# with the libraries it needs when run as root. Without either they are skipped, saying so.
if [ ! -x /usr/bin/chromium ]; then
  deps=(); [ "$(id -u)" -ne 0 ] || deps=(--with-deps)
  .venv/bin/python -m playwright install "${deps[@]}" chromium \
    || echo "could not fetch Playwright's Chromium: the browser tests will be skipped" >&2
fi
echo "$want" > "$stamp"
