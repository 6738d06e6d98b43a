#!/usr/bin/env bash
# Make sure the Debian packages named as arguments are installed.
# As root: installs what is missing. Otherwise: prints the one command to run, exits 1.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "citywatch needs these Debian packages: ${missing[*]}" >&2
  echo "run:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The packages' own services are not wanted: citywatch starts its servers itself.
apt-get update -qq >/dev/null 2>&1 || apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
