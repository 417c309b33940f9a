#!/usr/bin/env bash
# System packages the tests need: Mosquitto (real broker), Chromium (teacher view in a real browser),
# systemd (unit checks, and the units run under a real systemd), debootstrap (JetPack's userland for that),
# promtool (the shipped alert rules and their unit tests). Installs only what is missing; needs root (CI
# runs as root).
set -euo pipefail
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# Where the distribution has no chromium package (Ubuntu's is a snap), Playwright's own, which setup.sh
# fetches, stands in.
command -v chromium >/dev/null 2>&1 || compgen -G "${HOME:-}/.cache/ms-playwright/chromium-*/chrome-linux*/chrome" \
  >/dev/null || missing+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The board's venv is built from the system's Python (tests/systemd/test_units_under_systemd.py).
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# scripts/jetpack-userland.sh makes JetPack's Ubuntu userland for that test with it (it brings wget).
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
# Without a CJK font the zh-CN teacher view renders as empty boxes in screenshots.
[ -d /usr/share/fonts/opentype/noto ] || missing+=(fonts-noto-cjk)
# chronyd for tests/core/test_clock_sync.py, unpacked into .chrony/ and not installed: installing Debian's
# chrony removes systemd-timesyncd, the clock sync of the machine running the tests.
chrony_dir="$(cd "$(dirname "$0")/.." && pwd)/.chrony"
need_chrony=0
command -v chronyd >/dev/null 2>&1 || [ -x /usr/sbin/chronyd ] || [ -x "$chrony_dir/usr/sbin/chronyd" ] \
  || need_chrony=1
if [ ${#missing[@]} -eq 0 ] && [ $need_chrony -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ $need_chrony -eq 1 ]; then
  echo "unpacking chrony into $chrony_dir"
  scratch="$(mktemp -d)"
  (cd "$scratch" && apt-get download -qq chrony 2>/dev/null && dpkg -x chrony_*.deb "$chrony_dir") \
    || echo "could not unpack chrony: the chronyd tests will be skipped" >&2
  rm -rf "$scratch"
fi
packaged=()
for package in "${missing[@]}"; do
  if [ "$package" = chromium ] &&
     [[ "$(apt-cache policy chromium 2>/dev/null | awk '/Candidate:/ {print $2}')" =~ ^(\(none\))?$ ]]; then
    echo "no chromium package here (Ubuntu's is a snap): scripts/setup.sh fetches Playwright's Chromium"
  else
    packaged+=("$package")
  fi
done
missing=("${packaged[@]}")
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a system-wide broker on 1883, and the one with promtool a Prometheus server;
# the tests run their own broker on free ports and need only promtool. Only what this run installed is
# stopped, and only the package's own process (its user): a machine's broker, and the tests' brokers of
# another run, were stopped whenever anything was installed (a review).
for service in mosquitto prometheus; do
  [[ " ${missing[*]} " == *" $service "* ]] || continue
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now "$service" >/dev/null 2>&1 || true; fi
  pkill -x -u "$service" "$service" 2>/dev/null || true
done
