#!/bin/sh
# Install, upgrade or roll back edge-agent on a board, as root, from an unpacked release or a git checkout:
#
#     sudo sh provisioning/install.sh              # install or upgrade to this release
#     sudo sh provisioning/install.sh --rollback   # back to the release that ran before
#
# What it makes (the paths the systemd units and edge-agent-provision expect):
#   /opt/edge-agent/releases/<id>/app   the code, with engines/ (model manifests, default KT package),
#                                       systemd/ and provisioning/; <id> is a hash of code and manifests
#   /opt/edge-agent/releases/<id>/venv  its own virtual environment, which also sees JetPack's Python
#                                       packages (tensorrt and OpenCV with GStreamer come from apt there)
#   /opt/edge-agent/current             -> releases/<id>, switched in one rename once the release works
#   /opt/edge-agent/previous            -> the release that ran before (for --rollback)
#   /opt/edge-agent/{app,venv,VERSION}  -> current/...; VERSION is "package version + <id>": when it
#                                       changes, edge-agent-engines.service rebuilds the engines
# Nothing that runs is touched until the new release installed and imports: a failed pip, a missing
# wheel or a power cut leaves the running release as it was (an unfinished release is rebuilt next time).
# The last two releases are kept. A running edge-agent is restarted on the new release (real /opt only);
# run again on the release that is current, it checks that release and restarts nothing.
# Offline boards: PIP_NO_INDEX=1 PIP_FIND_LINKS=/media/usb/wheels sudo -E sh provisioning/install.sh
# Then provision the board (provisioning/README.md): identity, certificates, config, units.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${EDGE_AGENT_PREFIX:-/opt/edge-agent}
EXTRAS=${EDGE_AGENT_EXTRAS-jetson}  # set empty off a Jetson (no jtop, no CUDA bindings)
PYTHON=${PYTHON:-python3}
# auto: restart edge-agent when it runs from /opt/edge-agent under systemd; no: leave it to the caller
RESTART=${EDGE_AGENT_RESTART:-auto}

say() { echo "install.sh: $*" >&2; }

switch_to() {  # $1: releases/<id>; the one running now becomes "previous"
    old=$(readlink "$PREFIX/current" 2>/dev/null || true)
    ln -sfn "$1" "$PREFIX/current.new"
    mv -T "$PREFIX/current.new" "$PREFIX/current"  # rename(2): the switch is one atomic step
    if [ -n "$old" ] && [ "$old" != "$1" ]; then
        ln -sfn "$old" "$PREFIX/previous.new" && mv -T "$PREFIX/previous.new" "$PREFIX/previous"
    fi
    for link in app venv VERSION; do
        [ -L "$PREFIX/$link" ] || ln -s "current/$link" "$PREFIX/$link"
    done
}

# Provisioning copied the units into /etc/systemd/system (edge_agent/provisioning/system.py, install_units),
# and nothing updated them there: a release that changed a unit ran its new code under the old unit. Those
# installed are replaced by this release's where they differ, then systemd reloads. (Only on a real
# /opt/edge-agent, whose venv is the one the shipped units name, so provisioning substituted nothing.)
update_units() {
    changed=""
    for unit in edge-agent.service edge-agent-engines.service edge-agent-retry.timer edge-agent-retry.service; do
        installed=/etc/systemd/system/$unit
        [ -f "$installed" ] || continue  # not provisioned yet: provisioning installs them
        cmp -s "$PREFIX/app/systemd/$unit" "$installed" && continue
        cp "$PREFIX/app/systemd/$unit" "$installed.new"
        chmod 644 "$installed.new"
        mv -f "$installed.new" "$installed"
        changed="$changed $unit"
    done
    if [ -n "$changed" ]; then
        systemctl daemon-reload
        say "updated in /etc/systemd/system:$changed"
    fi
}

restart_daemon() {
    # The units first, restart or not: a restart by hand later must find the release's units (round 2)
    if [ "$PREFIX" = /opt/edge-agent ] && [ -d /run/systemd/system ]; then
        update_units
    fi
    if [ "$RESTART" != auto ] || [ "$PREFIX" != /opt/edge-agent ] || [ ! -d /run/systemd/system ]; then
        say "restart edge-agent to run it (systemctl restart edge-agent); a running process keeps the old code"
        return
    fi
    if ! systemctl is-active --quiet edge-agent; then
        say "edge-agent is not running ($(systemctl is-active edge-agent)); once the board is provisioned:"
        say "systemctl reset-failed edge-agent; systemctl start edge-agent"
    else
        # systemd counts every start against StartLimitBurst (5 in 10 minutes), restarts by hand too: after
        # a few restarts this one was refused ("start-limit-hit") and the board stayed down (2026-12-01).
        systemctl reset-failed edge-agent-engines edge-agent 2>/dev/null || true
        # The engine build for the new VERSION first: the daemon's start waits for it (After=), as at boot.
        # The daemon no longer Wants= it (a reload after a config edit waited for a whole build), so its
        # restart alone would not start it; a build of the old release still running starts again.
        # --no-block: a failed build is not fatal, the daemon runs on ONNX Runtime then.
        systemctl restart --no-block edge-agent-engines 2>/dev/null || true
        if systemctl try-restart edge-agent; then
            say "edge-agent restarted on $(cat "$PREFIX/VERSION")"
        else
            say "edge-agent did not restart on $(cat "$PREFIX/VERSION"): see systemctl status edge-agent and"
            say "journalctl -u edge-agent; sh $0 --rollback goes back to the release before"
            exit 1
        fi
    fi
}

if [ "${1:-}" = --rollback ]; then
    target=$(readlink "$PREFIX/previous" 2>/dev/null || true)
    if [ -z "$target" ] || [ ! -e "$PREFIX/$target/.complete" ]; then
        say "no previous release to roll back to in $PREFIX"
        exit 2
    fi
    switch_to "$target"
    echo "edge-agent rolled back in $PREFIX (VERSION: $(cat "$PREFIX/VERSION"))"
    restart_daemon
    exit 0
fi
[ $# -eq 0 ] || { say "usage: install.sh [--rollback]"; exit 2; }

# The units run the venv's interpreter as the edge-agent user with /root, /home and /tmp hidden
# (ProtectHome, PrivateTmp): one from pyenv or conda in a home folder fails there with "status=203/EXEC"
# and no other hint (seen under a real systemd on 2026-12-01). EDGE_AGENT_PYTHON_ANYWHERE=1 allows it for
# prefixes the units never run (tests).
real_python=$(readlink -f "$(command -v "$PYTHON" || echo "$PYTHON")")
case "$real_python" in
    /root/*|/home/*|/tmp/*|/var/tmp/*|/run/user/*)
        if [ -z "${EDGE_AGENT_PYTHON_ANYWHERE:-}" ]; then
            say "$PYTHON is $real_python, which the edge-agent service cannot run (its unit hides /root, /home"
            say "and /tmp and runs as the edge-agent user); use the system's: PYTHON=/usr/bin/python3 sh $0"
            exit 2
        fi ;;
esac
"$PYTHON" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' || {
    say "edge-agent needs Python 3.10 to 3.12 (JetPack 6 ships 3.10); $PYTHON is not"
    exit 2
}
# Ubuntu (JetPack 6 too) ships ensurepip only in python3-venv, which an install may lack: venv would
# fail halfway.
"$PYTHON" -c 'import ensurepip' 2>/dev/null || {
    say "$PYTHON cannot make a virtual environment: install python3-venv (apt install python3-venv), then run"
    say "this again"
    exit 2
}
for part in pyproject.toml README.md edge_agent engines systemd provisioning; do
    [ -e "$SRC/$part" ] || { say "$SRC/$part is missing: run this from a whole release"; exit 2; }
done
if [ -d "$PREFIX/app" ] && [ ! -L "$PREFIX/app" ]; then
    say "$PREFIX holds the layout of an earlier install.sh (app/, venv/): move it aside first, e.g."
    say "  systemctl stop edge-agent; mkdir $PREFIX.before; mv $PREFIX/* $PREFIX.before/"
    exit 2
fi

# Of everything the release copies, and the extras its venv gets: a release that changes only a unit file
# or a dependency pin is a new release, not "already installed" with the old units and packages.
id=$(cd "$SRC" && { echo "extras=${EXTRAS:-}"; find pyproject.toml README.md edge_agent engines systemd provisioning \
    -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16)
release="releases/$id"
dir="$PREFIX/$release"
mkdir -p "$PREFIX/releases"

imports() {  # $1: a release's venv; the daemon's own imports, from outside the source tree
    (cd / && "$1/bin/python" -c 'import edge_agent.assembly, edge_agent.cli') >/dev/null
}

if [ "$(readlink "$PREFIX/current" 2>/dev/null || true)" = "$release" ] && [ -e "$dir/.complete" ]; then
    # Run again on the release that runs: checked and its units put back, but the daemon not restarted (it
    # was, for nothing, in the middle of a lesson)
    if ! imports "$dir/venv"; then
        say "release $id, the current one, does not import: sh $0 --rollback goes back to the release before"
        exit 1
    fi
    if [ "$PREFIX" = /opt/edge-agent ] && [ -d /run/systemd/system ]; then
        update_units
    fi
    echo "edge-agent $(cut -d' ' -f1 "$PREFIX/VERSION") is already installed and current in $PREFIX (VERSION:"\
        "$(cat "$PREFIX/VERSION")): nothing switched, edge-agent not restarted"
    exit 0
elif [ -e "$dir/.complete" ]; then
    say "release $id is already installed; switching to it"
else
    rm -rf "$dir"  # an earlier attempt that did not finish
    mkdir "$dir" "$dir/app"
    # Only what the board runs: no tests, benchmarks or virtual environments.
    (cd "$SRC" && tar cf - --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md edge_agent engines \
        systemd provisioning) | (cd "$dir/app" && tar xf -)
    "$PYTHON" -m venv --system-site-packages "$dir/venv"
    # Editable: the daemon finds engines/ and systemd/ beside its code, in app/.
    pip_install() {
        "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --editable "$dir/app${EXTRAS:+[$EXTRAS]}"
    }
    pip_failed() {
        rm -rf "$dir"
        say "pip failed; nothing was switched: the running release stays ($(cat "$PREFIX/VERSION" 2>/dev/null || echo none))"
        exit 1
    }
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip && pip_install \
        || pip_failed
    # JetPack's OpenCV is built with GStreamer, which a CSI camera's pipeline (nvarguscamerasrc ... appsink)
    # needs; the opencv-python-headless wheel is not, and the venv's own packages hide the system's. The
    # wheel goes where the system's OpenCV has GStreamer; it comes back if that one then does not import in
    # the venv (it is built for the system's numpy, and pip may have put another in the venv).
    gstreamer='import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()))'
    if "$PYTHON" -I -c "$gstreamer" 2>/dev/null; then
        "$dir/venv/bin/python" -m pip uninstall --quiet --yes opencv-python-headless || pip_failed
        if "$dir/venv/bin/python" -c "$gstreamer" 2>/dev/null; then
            say "removed opencv-python-headless (no GStreamer) from the venv: it uses the system's OpenCV"
        else
            why=$("$dir/venv/bin/python" -c "$gstreamer" 2>&1 | tail -n 1)
            pip_install || pip_failed
            say "kept opencv-python-headless (no GStreamer: no CSI camera pipelines): the system's OpenCV"
            say "has GStreamer but does not work in the venv (${why:-no GStreamer there})"
        fi
    fi
    # The daemon's own imports, before anything switches to it.
    if ! imports "$dir/venv"; then
        rm -rf "$dir"
        say "the new release does not import; nothing was switched"
        exit 1
    fi
    echo "$id" >"$dir/app/edge_agent/BUILD"  # edge-agent --version, edge_build_info and the heartbeat show it
    version=$("$dir/venv/bin/edge-agent" --version | cut -d' ' -f2)
    printf '%s %s\n' "$version" "$id" >"$dir/VERSION"
    sync
    touch "$dir/.complete"
fi

switch_to "$release"
keep_old=$(readlink "$PREFIX/previous" 2>/dev/null || echo none)
for other in "$PREFIX"/releases/*; do
    case "releases/${other##*/}" in
        "$release" | "$keep_old") ;;
        *) rm -rf "$other" ;;
    esac
done
echo "edge-agent $(cut -d' ' -f1 "$PREFIX/VERSION") installed in $PREFIX (VERSION: $(cat "$PREFIX/VERSION"))"
restart_daemon
