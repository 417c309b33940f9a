#!/bin/sh
# Install or upgrade edge-agent on a board, as root, from an unpacked release or a git checkout:
#
#     sudo sh provisioning/install.sh
#
# What it makes (the paths the systemd units and edge-agent-provision expect):
#   /opt/edge-agent/app       the code, with engines/ (model manifests, default KT package) and systemd/
#   /opt/edge-agent/venv      a virtual environment that also sees JetPack's own Python packages
#                             (tensorrt and OpenCV with GStreamer come from apt there, not from PyPI)
#   /opt/edge-agent/VERSION   package version + a hash of the code and manifests: when it changes,
#                             edge-agent-engines.service rebuilds the engines on the next start
# An upgrade replaces app/ only once the new version installed; the previous code stays in app.old/.
# Offline boards: PIP_NO_INDEX=1 PIP_FIND_LINKS=/media/usb/wheels sudo -E sh provisioning/install.sh
# Then provision the board (provisioning/README.md): identity, certificates, config, units.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${EDGE_AGENT_PREFIX:-/opt/edge-agent}
EXTRAS=${EDGE_AGENT_EXTRAS-jetson}  # set empty off a Jetson (no jtop, no CUDA bindings)
PYTHON=${PYTHON:-python3}

"$PYTHON" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' || {
    echo "install.sh: edge-agent needs Python 3.10 to 3.12 (JetPack 6 ships 3.10); $PYTHON is not" >&2
    exit 2
}
for part in pyproject.toml edge_agent engines systemd; do
    [ -e "$SRC/$part" ] || { echo "install.sh: $SRC/$part is missing: run this from a whole release" >&2; exit 2; }
done

mkdir -p "$PREFIX"
rm -rf "$PREFIX/app.new"
mkdir "$PREFIX/app.new"
# Only what the board runs: no tests, benchmarks or virtual environments.
(cd "$SRC" && tar cf - --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md edge_agent engines \
    systemd provisioning) | (cd "$PREFIX/app.new" && tar xf -)

[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip

swap_in() {  # app.new becomes app; the running version (if any) is kept as app.old
    rm -rf "$PREFIX/app.old"
    if [ -d "$PREFIX/app" ]; then mv "$PREFIX/app" "$PREFIX/app.old"; fi
    mv "$PREFIX/app.new" "$PREFIX/app"
}
swap_in
# Editable: the daemon finds engines/ and systemd/ beside its code, in app/.
if ! "$PREFIX/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --editable "$PREFIX/app${EXTRAS:+[$EXTRAS]}"; then
    echo "install.sh: pip failed; the previous version is back in place" >&2
    if [ -d "$PREFIX/app.old" ]; then rm -rf "$PREFIX/app"; mv "$PREFIX/app.old" "$PREFIX/app"; fi
    exit 1
fi

version=$("$PREFIX/venv/bin/edge-agent" --version | sed 's/^edge-agent //')
tree=$(cd "$PREFIX/app" && find edge_agent engines -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
printf '%s %s\n' "$version" "$tree" >"$PREFIX/VERSION.new"
mv "$PREFIX/VERSION.new" "$PREFIX/VERSION"
echo "edge-agent $version installed in $PREFIX (VERSION: $(cat "$PREFIX/VERSION"))"
