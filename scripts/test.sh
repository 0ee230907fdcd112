#!/usr/bin/env bash
# Sets up .venv with the test dependencies and runs the whole test suite (CPU only, no network needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
# The web UI test drives Debian's headless chromium via chromedriver (no browser download); a CJK font keeps the
# screenshot readable. Installed only when missing, and only as root with apt-get.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-microhei >/dev/null
  else
    echo "scripts/test.sh: chromium/chromium-driver missing and not root: the web UI browser test will be skipped." >&2
  fi
fi
# The two-node test (tests/train/test_multinode.py) joins two network namespaces with `ip` (iproute2), as root.
if ! command -v ip >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
export GRADIO_ANALYTICS_ENABLED=False
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q "$@"
