#!/usr/bin/env bash
# Prints the path of a Python of version $1 (e.g. 3.10) on this machine, or exits 1 when there is none.
ver="$1"
for candidate in "python$ver" "$HOME/.pyenv/versions/$ver"*/bin/"python$ver" "/usr/bin/python$ver"; do
  if [ -x "$(command -v "$candidate" 2>/dev/null || echo "$candidate")" ] &&
     "$candidate" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$ver')" 2>/dev/null; then
    echo "$candidate"
    exit 0
  fi
done
exit 1
