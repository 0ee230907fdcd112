#!/usr/bin/env bash
# Sets up .venv with the test dependencies and runs the whole test suite (CPU only, no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
