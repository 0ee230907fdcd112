#!/usr/bin/env bash
# Creates .venv-llamacpp/ (once) with a prebuilt llama.cpp (CPU build of about March 2025, through cffi) for
# checking GGUF exports in llama.cpp itself: src/tunewise/export/llamacpp_run.py runs there, tests/export/
# test_llamacpp.py uses it when it is there.
#   bash scripts/setup_llamacpp.sh      (about 1 min and 330 MB; tunewise's own .venv is not touched)
#   LLAMACPP_WHEEL=/path/llama_cpp_cffi-0.4.42-cp311-cp311-manylinux_2_34_x86_64.whl bash scripts/setup_llamacpp.sh
#                                       (a wheel already downloaded, instead of the 291 MB one from the index)
# llama-cpp-cffi's metadata requires transformers<5 (its high-level wrappers use it) and tunewise's .venv has 5.23,
# so it lives in a venv of its own, installed --no-deps: the runner loads its compiled CPU module directly, which
# needs cffi alone (llama-cpp-python, the usual binding, builds llama.cpp from source: far too slow on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-llamacpp
py="${PYTHON:-python3}"
pins=("cffi==2.1.1" "pycparser==3.12")
stamp="$venv/.tunewise-llamacpp-installed"
if [ -f "$stamp" ] && [ ! scripts/setup_llamacpp.sh -nt "$stamp" ]; then
  echo "$venv: up to date ($($venv/bin/python -c 'import importlib.metadata as m; print("llama-cpp-cffi", m.version("llama-cpp-cffi"))'))"
  exit 0
fi
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"python {sys.version.split()[0]}: the wheel is cp311"' \
  || { echo "set PYTHON to a Python 3.11 (llama-cpp-cffi 0.4.42's Linux wheel is built for CPython 3.11)"; exit 2; }
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
if [ -n "${LLAMACPP_WHEEL:-}" ]; then
  echo "installing llama-cpp-cffi from $LLAMACPP_WHEEL"
  "$venv/bin/python" -m pip install -q --no-deps "$LLAMACPP_WHEEL"
else
  "$venv/bin/python" -m pip install -q --no-deps "llama-cpp-cffi==0.4.42"
fi
"$venv/bin/python" -m pip install -q "${pins[@]}"
# the runner's own import check: the CPU module loads and llama.cpp reports its build
"$venv/bin/python" src/tunewise/export/llamacpp_run.py --version
touch "$stamp"
