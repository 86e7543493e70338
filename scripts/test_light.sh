#!/usr/bin/env bash
# The light install: build the wheel, install it WITHOUT torch into a fresh venv, and run
# tests/light there (the sample, a dev image, a head, propagation, eval; torch never imported).
# Prints the wheel's size, the install's size on disk and its wall time. Usage:
#   bash scripts/test_light.sh [pytest args]       (default: tests/light -ra)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"
venv="${LIGHT_VENV:-$repo/.venv-light}"
dist="$repo/.whl"
rm -rf "$venv" "$dist"
start=$(date +%s)
"$python" -m venv "$venv"
bash "$repo/scripts/pip_install.sh" "$venv/bin/python" -q --upgrade pip
"$venv/bin/python" -m pip wheel -q --no-deps -w "$dist" "$repo"
wheel=$(ls "$dist"/napari_medsam-*.whl)
bash "$repo/scripts/pip_install.sh" "$venv/bin/python" -q "$wheel"
took=$(( $(date +%s) - start ))
size=$(du -sm "$venv" | cut -f1)
echo "light install: wheel $(( $(stat -c %s "$wheel") / 1048576 )) MiB, venv ${size} MiB, ${took} s"
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
  echo "the light install pulled in torch" >&2
  exit 1
fi
bash "$repo/scripts/pip_install.sh" "$venv/bin/python" -q "pytest>=8"
if [ $# -eq 0 ]; then
  set -- tests/light -ra
fi
cd "$repo"  # the installed wheel is imported, not the checkout: run from outside the package
exec env PYTHONSAFEPATH=1 "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
