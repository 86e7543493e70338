#!/usr/bin/env bash
# pip install that survives a flaky network: pip resumes interrupted downloads, and the whole
# install is retried a few times before giving up (CI once failed on a cut-off 86 MB wheel).
#   bash scripts/pip_install.sh PYTHON [pip install args...]
set -uo pipefail
python="$1"; shift
opts=(--retries 10 --timeout 60)
# --resume-retries exists from pip 25.1 on; the first call may run an older pip.
if "$python" -m pip install --help 2>/dev/null | grep -q -- --resume-retries; then
  opts+=(--resume-retries 30)
fi
for attempt in 1 2 3 4; do
  if "$python" -m pip install "${opts[@]}" "$@"; then
    exit 0
  fi
  echo "pip install failed (attempt $attempt of 4); retrying in $((attempt * 15)) s" >&2
  sleep $((attempt * 15))
done
echo "pip install failed 4 times: check the network connection to the package index" >&2
exit 1
