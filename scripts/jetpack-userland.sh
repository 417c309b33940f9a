#!/usr/bin/env bash
# A JetPack userland without L4T, so that tests/systemd/test_units_under_systemd.py runs the shipped units
# on the systemd a board runs and builds the board's venv from its Python:
#   6 (default): JetPack 6, Ubuntu 22.04 "jammy" with its updates: systemd 249, Python 3.10, in .jetpack6/
#   7:           JetPack 7, Ubuntu 24.04 "noble" with its updates: systemd 255, Python 3.12, in .jetpack7/
# Same package versions as a board, but this machine's architecture (amd64 here, arm64 on a Jetson) and no
# NVIDIA parts. About 270 MB each; needs root and archive.ubuntu.com. Made once; delete the folder to make
# it anew.
set -euo pipefail
case "${1:-6}" in
  6) suite=jammy ;;
  7) suite=noble ;;
  *) echo "usage: jetpack-userland.sh [6|7]" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)/.jetpack${1:-6}"
[ -f "$root/.complete" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "jetpack-userland.sh needs root (debootstrap)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "jetpack-userland.sh needs debootstrap: bash scripts/system-deps.sh installs it" >&2
  exit 1
fi
mirror=http://archive.ubuntu.com/ubuntu
# The archive's signing keys, from Ubuntu's own package, pinned: debootstrap checks the release with them.
keyring_deb=ubuntu-keyring_2021.03.26_all.deb
keyring_sha256=0d0e7ed6b112f5d03eabf3c7eb01ebdacf9c57714b279e90495cfc58c8c4520f
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
wget -q -T 60 -O "$scratch/$keyring_deb" "$mirror/pool/main/u/ubuntu-keyring/$keyring_deb"
echo "$keyring_sha256  $scratch/$keyring_deb" | sha256sum -c --quiet
dpkg-deb -x "$scratch/$keyring_deb" "$scratch/keyring"
rm -rf "$root.partial"
echo "making JetPack ${1:-6}'s userland (Ubuntu $suite) in $root"
# Debian 12's debootstrap has no script for noble: jammy's serves both
timeout 900 debootstrap --variant=minbase --components=main,universe \
  --keyring="$scratch/keyring/usr/share/keyrings/ubuntu-archive-keyring.gpg" \
  --include=systemd,python3,mosquitto,openssl,ca-certificates \
  "$suite" "$root.partial" "$mirror" /usr/share/debootstrap/scripts/jammy >"$scratch/debootstrap.log" 2>&1 \
  || { tail -20 "$scratch/debootstrap.log" >&2; exit 1; }
cat >"$root.partial/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main universe
deb $mirror $suite-updates main universe
deb http://security.ubuntu.com/ubuntu $suite-security main universe
SOURCES
cp /etc/resolv.conf "$root.partial/etc/resolv.conf"
# What Ubuntu's installer writes and debootstrap does not: without it "localhost" does not resolve.
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root.partial/etc/hosts"
# The certificate authorities this machine added (a TLS-inspecting proxy's, say): a board on the same
# network needs them too, or pip cannot reach PyPI from it.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root.partial/usr/local/share/ca-certificates/"
  chroot "$root.partial" update-ca-certificates >/dev/null 2>&1
fi
# python3-venv only downloaded: Ubuntu installs (a board's too) may lack it; the test installs it as
# install.sh says to.
timeout 900 chroot "$root.partial" sh -c 'apt-get update -qq && apt-get dist-upgrade -y -qq && apt-get clean &&
  apt-get install -y -qq --download-only python3-venv' \
  >"$scratch/upgrade.log" 2>&1 || { tail -20 "$scratch/upgrade.log" >&2; exit 1; }
# Mosquitto is here as the tests' broker (the fleet's, not the board's), started by them as on this machine.
chroot "$root.partial" systemctl disable -q mosquitto 2>/dev/null
touch "$root.partial/.complete"
mv -T "$root.partial" "$root"
chroot "$root" sh -c 'echo "$(systemctl --version 2>/dev/null | head -1), $(python3 --version)"'
