#!/usr/bin/env bash
# Tests of the 3D Slicer extension against the real MRML libraries of PyPI's slicer-core.
#
# They need their own virtual environment (slicer-core brings vtk 9.6, ~300 MB): it is made
# from scratch when missing, and refreshed when pyproject.toml changes. Usage:
#   bash scripts/test_slicer.sh [pytest args]      (default: tests/slicer -ra)
#   SLICER_VENV=/path/to/venv bash scripts/test_slicer.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"
venv="${SLICER_VENV:-$repo/.venv-slicer}"
stamp="$venv/.installed"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "slicer tests: preparing $venv (slicer-core, slicerio, napari-medsam[torch])"
  start=$(date +%s)
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  bash "$repo/scripts/pip_install.sh" "$venv/bin/python" -q --upgrade pip
  bash "$repo/scripts/pip_install.sh" "$venv/bin/python" -q "slicer-core>=5.13" "slicerio>=1.0" "pytest>=8"
  bash "$repo/scripts/pip_install.sh" "$venv/bin/python" -q -e "$repo[torch]"
  touch "$stamp"
  echo "slicer tests: environment ready in $(( $(date +%s) - start )) s"
fi

if [ $# -eq 0 ]; then
  set -- tests/slicer -ra
fi
exec "$venv/bin/python" -m pytest "$@"
