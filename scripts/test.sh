#!/usr/bin/env bash
# The test command: set up if needed, then lint, type-check, check the TensorRT adapter against the
# JetPack 6 API, and run the whole suite (real Mosquitto, real Chromium, real models from ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
# JetPack 6's and 7's userlands (Ubuntu 22.04 and 24.04) for the units' runs under their systemd, made
# while the set-up and the checks below run (about 70 s each, once); without either, the units run under
# this machine's systemd
mkdir -p artifacts
declare -A making
for jetpack in 6 7; do
  # each in its own session, stopped with its debootstrap (a review: killing the script alone left
  # debootstrap writing into the folder a rerun removes, for up to 15 minutes)
  setsid -w bash scripts/jetpack-userland.sh "$jetpack" >"artifacts/jetpack$jetpack-userland.log" 2>&1 &
  making[$jetpack]=$!
done
beside=""
stop_beside() {
  local pid
  for pid in "${making[@]}" $beside; do kill -- "-$pid" 2>/dev/null || true; done
}
trap stop_beside EXIT
bash scripts/setup.sh
echo "== README config reference"
.venv/bin/python scripts/gen_config_reference.py --check README.md
export EDGE_AGENT_MODEL_MIRROR="${EDGE_AGENT_MODEL_MIRROR:-$(cd .. && pwd)/shared/models}"
echo "== ruff"
.venv/bin/ruff check edge_agent tests benchmarks provisioning scripts
echo "== mypy"
.venv/bin/mypy
echo "== TensorRT adapter against tensorrt-stubs and the TensorRT 10.3 API names"
.venv/bin/python scripts/check_tensorrt_api.py
for jetpack in 6 7; do
  made=0
  wait "${making[$jetpack]}" || made=$?
  unset "making[$jetpack]"  # ended: its number may be another's by the EXIT trap
  cat "artifacts/jetpack$jetpack-userland.log"
  [ "$made" -eq 0 ] || echo "== no JetPack $jetpack userland: the units do not run under its systemd"
done
here=()
if [ -n "${EDGE_AGENT_TEST_ALSO_PYTHON:-}" ] && bash scripts/find-python.sh "$EDGE_AGENT_TEST_ALSO_PYTHON" >/dev/null; then
  here=(-m "not second_python")  # those run beside, on the second Python
  # The same suite on a second Python beside this one, not after it: both mostly wait (brokers, browsers,
  # timeouts; CI's 2 cores were 35 % busy), so together they took 604 s instead of 804 s. Its own session,
  # so that an interrupted run stops its pytest too.
  PYVER="$EDGE_AGENT_TEST_ALSO_PYTHON" setsid -w bash scripts/test-compat.sh "$@" >artifacts/compat.log 2>&1 &
  beside=$!
fi
echo "== pytest"
status=0
# the slowest tests, so that CI time can be kept in check (aim: under 15 minutes on 2 cores)
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 -n "${EDGE_AGENT_TEST_WORKERS:-2}" \
  --dist loadfile "${here[@]}" "$@" || status=$?
if [ -n "$beside" ]; then
  also=0
  wait "$beside" || also=$?
  beside=""
  cat artifacts/compat.log
  [ "$status" -ne 0 ] || status=$also
fi
exit "$status"
