#!/usr/bin/env bash
# Build VBench's own venv (torch 2.14.1 + torchvision 0.29.1 + vbench; several GB, not part of CI) if it is
# missing, then run the real temporal_flickering on videos qvgen wrote and check qvgen's metric agrees.
# Usage: bash packages/qvgen-eval/scripts/vbench_smoke.sh [VENV_DIR]
#   (default: .nox/vbench/tmp/vbench-venv in the repo, the venv `nox -s vbench` builds; either reuses the other's)
# Run from the repo root with the dev venv (qvgen-eval installed) active.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
VENV="${1:-$ROOT/.nox/vbench/tmp/vbench-venv}"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac  # absolute: VBench runs in its output folder
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vbench" 2>/dev/null; then
    python3.11 -m venv "$VENV"
    "$VENV/bin/pip" install torch==2.14.1 torchvision==0.29.1 vbench
fi
exec python "$(dirname "$0")/vbench_smoke.py" --vbench-python "$VENV/bin/python" "${@:2}"
