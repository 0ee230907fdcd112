#!/usr/bin/env bash
# Download the wheels benchmarks/gpu.sh installs on a GPU machine that has no network (run this where pip reaches
# the package index; the folder then travels with the working tree, 64 MiB in all with the tracked files).
#
#   bash benchmarks/gpu_wheels.sh [DIR] [--python 3.12]        # DIR defaults to .staging/wheels (git-ignored)
#
# The measured set, each pinned and fetched with --no-deps: the GPU image (Python 3.12, torch 2.11 + CUDA 13,
# transformers 5.17, peft, accelerate, tokenizers 0.23.2, pyarrow, pandas, xxhash, huggingface_hub 1.33,
# matplotlib, psutil, tensorboard: /work/.library/device/KINDS.md) lacks trl, datasets, dill, multiprocess and
# liger-kernel, and has other versions of transformers, peft and tokenizers. dashscope is not installed: its wheel
# holds the Qwen tokenizer's ranks that benchmarks/qwen_shape.py reads offline from this folder.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=.staging/wheels
PYV=3.12
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYV="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "gpu_wheels.sh: unknown option $1" >&2; exit 2 ;;
    *) DIR="$1" ;;
  esac
  shift
done
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

PURE=(transformers==5.23.0 peft==0.21.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1 liger-kernel==0.8.5
      huggingface_hub==1.33.0 dashscope==2.0.2)
BINARY=(tokenizers==0.23.3 multiprocess==0.70.19 xxhash==4.1.0)   # built per Python version and platform
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

mkdir -p "$DIR"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$DIR" "${PURE[@]}"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
  "${PLATFORMS[@]}" -d "$DIR" "${BINARY[@]}"

ls -l "$DIR"
BYTES=$(find "$DIR" -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
MIB=$(awk -v b="$BYTES" 'BEGIN {printf "%.1f", b / 1048576}')
echo "gpu_wheels.sh: $(find "$DIR" -name '*.whl' | wc -l) wheels, $MIB MiB in $DIR (Python $PYV)"
TREE=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
TOTAL=$(awk -v a="$BYTES" -v b="$TREE" 'BEGIN {printf "%.1f", (a + b) / 1048576}')
echo "with the tracked files: $TOTAL MiB of the 64 MiB a device call carries"
awk -v t="$TOTAL" 'BEGIN {exit !(t > 60)}' && echo "WARNING: over 60 MiB: the device call may refuse the tree" >&2
exit 0
