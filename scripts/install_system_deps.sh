#!/usr/bin/env bash
# Debian packages the GUI tests need (Xvfb + xcb libraries for Qt). Installs only what is
# missing, and only when running as root with apt-get; otherwise says what to install.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
list="$here/.ci/apt-packages.txt"
[ -f "$list" ] || exit 0
missing=()
while read -r pkg; do
  [ -z "$pkg" ] || [[ "$pkg" == \#* ]] && continue
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done < "$list"
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  apt-get -o Acquire::Retries=5 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=5 install -y -qq "${missing[@]}" >/dev/null
else
  echo "GUI tests need these Debian packages: ${missing[*]} (sudo apt-get install ...)" >&2
fi
