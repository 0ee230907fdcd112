#!/usr/bin/env bash
# Creates .venv (once) and installs tunewise into it with the pinned versions of constraints.txt.
#   bash scripts/setup.sh [EXTRAS]     e.g. EXTRAS=dev,deepspeed ; default: none
# pip takes torch==2.13.0 from constraints.txt; set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu on a
# machine without a GPU whose pip would otherwise fetch the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.tunewise-installed-${extras:-core}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -c constraints.txt -e "$spec"
  touch "$stamp"
fi
