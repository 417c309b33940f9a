#!/bin/sh
# Fill a folder with every wheel install.sh needs, for boards without internet (or behind a slow link):
# run it on any machine with pip and internet, copy the folder to the board (a USB stick), then there:
#     PIP_NO_INDEX=1 PIP_FIND_LINKS=/media/usb/wheels sudo -E sh provisioning/install.sh
#
#     sh provisioning/board-wheels.sh OUT_DIR [jetpack6|jetpack7] [aarch64|x86_64]
# jetpack6 (default): Python 3.10, glibc 2.35; jetpack7: Python 3.12, glibc 2.39. aarch64 (default) is a
# Jetson. Only wheels: a board has no compilers. EDGE_AGENT_EXTRAS as for install.sh (default jetson).
# BOARD_WHEELS_REPORT=FILE: fetch nothing, write pip's report of what would be fetched to FILE.
# PYTHON: the Python whose pip fetches (default python3; any version: the board's markers are applied).
set -eu
out=${1:?usage: board-wheels.sh OUT_DIR [jetpack6|jetpack7] [aarch64|x86_64]}
board=${2:-jetpack6}
case "$board" in
    jetpack6) python=3.10 glibc=35 ;;
    jetpack7) python=3.12 glibc=39 ;;
    *) echo "board-wheels.sh: unknown board software '$board' (jetpack6 or jetpack7)" >&2; exit 2 ;;
esac
arch=${3:-aarch64}
case "$arch" in aarch64|x86_64) ;; *) echo "board-wheels.sh: unknown architecture '$arch'" >&2; exit 2 ;; esac
EXTRAS=${EDGE_AGENT_EXTRAS-jetson}
SRC=$(cd "$(dirname "$0")/.." && pwd)
# pip matches --platform tags literally: every manylinux tag the board's glibc accepts
platforms="--platform manylinux2014_$arch --platform linux_$arch"
minor=17
while [ "$minor" -le "$glibc" ]; do
    platforms="$platforms --platform manylinux_2_${minor}_$arch"
    minor=$((minor + 1))
done
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: > "$work/more.txt"
PYTHON=${PYTHON:-python3}
# The package's dependencies, and what install.sh itself installs: pip, and setuptools and wheel to build
# the release (editable) in its venv; then what the board's markers add (below).
for_board() {
    # shellcheck disable=SC2086  # $platforms: one word per --platform
    "$PYTHON" -m pip "$@" --quiet --disable-pip-version-check --only-binary=:all: \
        --python-version "$python" --implementation cp --abi "cp$(echo "$python" | tr -d .)" --abi abi3 \
        --abi none $platforms "$SRC${EXTRAS:+[$EXTRAS]}" pip "setuptools>=77" wheel -r "$work/more.txt"
}
# pip evaluates markers (tomli; python_version < "3.11") for the Python running it, not the board's: resolve,
# add what the board's Python and architecture need that is missing, again until nothing is.
rounds=0
while :; do
    for_board install --dry-run --ignore-installed --target "$work/dry-run" --report "$work/report.json"
    "$PYTHON" "$SRC/provisioning/board_wheels_missing.py" "$work/report.json" "$python" "$arch" > "$work/missing"
    [ -s "$work/missing" ] || break
    rounds=$((rounds + 1))
    if [ "$rounds" -gt 5 ]; then
        echo "board-wheels.sh: still missing for $board after 5 rounds: $(tr '\n' ' ' < "$work/missing")" >&2
        exit 1
    fi
    cat "$work/missing" >> "$work/more.txt"
done
if [ -n "${BOARD_WHEELS_REPORT:-}" ]; then
    cp "$work/report.json" "$BOARD_WHEELS_REPORT"  # the tests' check: pip's JSON report, nothing fetched
else
    for_board download --dest "$out"
    echo "$(ls "$out" | wc -l) wheels for $board on $arch in $out"
fi
