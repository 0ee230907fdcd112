#!/usr/bin/env bash
# The GPU benchmarks in one command (benchmarks/gpu_bench.py says what runs; benchmarks/RESULTS.md what it gave).
#
#   bash benchmarks/gpu.sh [--wheels DIR] [--out DIR] [--budget S] [--deadline S]   # on a CUDA machine
#   bash benchmarks/gpu.sh --cpu [--out DIR]                                        # the same steps, tiny, on a CPU
#   bash benchmarks/gpu.sh --steps "LoRA 7B,Liger on"              # a rerun of some rows only (the others: skipped)
#
# On a GPU, the wheels of `bash benchmarks/gpu_wheels.sh DIR` (default .staging/wheels, when present) that the
# machine lacks or has in another version are installed offline into $GPU_BENCH_SITE (/tmp/tunewise-gpu-site),
# which goes on PYTHONPATH ahead of the machine's own packages; torch stays the machine's. --cpu installs nothing.
# Python: $PYTHON, else .venv/bin/python, else python3. src/ is on PYTHONPATH, so this tree's tunewise runs.
# Results: benchmarks/gpu-results/<date>-<device>.md and .json (or --out); when $OUT is set (the device machine's
# return folder) they are copied there, with the step logs as gpu-bench-logs.tar.gz. The commit is recorded from
# git, or from $TUNEWISE_COMMIT where the tree has no .git.
set -uo pipefail
cd "$(dirname "$0")/.."
CPU=0
WHEELS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=1; ARGS+=(--cpu) ;;
    --wheels) WHEELS="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c '' 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ "$CPU" = 0 ] && [ -z "$WHEELS" ] && [ -d .staging/wheels ]; then WHEELS=.staging/wheels; fi
if [ -n "$WHEELS" ]; then
  ARGS+=(--wheels "$WHEELS")
  if [ "$CPU" = 0 ]; then
    SITE=${GPU_BENCH_SITE:-/tmp/tunewise-gpu-site}
    mkdir -p "$SITE"
    export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH#"$PWD/src"}"
    echo "== wheels from $WHEELS into $SITE"
    "$PY" benchmarks/gpu_wheels_install.py --wheels "$WHEELS" --target "$SITE" \
      || echo "gpu.sh: some wheels did not install; the rows that need them will say so" >&2
  fi
fi
WORK=${GPU_BENCH_WORK:-$(mktemp -d /tmp/gpu-bench-XXXXXX)}
"$PY" benchmarks/gpu_bench.py --work "$WORK" ${ARGS[@]+"${ARGS[@]}"}
RC=$?
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  RESULTS=$("$PY" - ${ARGS[@]+"${ARGS[@]}"} <<'PY'
import sys
args = sys.argv[1:]
print(args[args.index("--out") + 1] if "--out" in args else "benchmarks/gpu-results")
PY
)
  cp "$RESULTS"/*.md "$RESULTS"/*.json "$OUT"/ 2>/dev/null
  tar -czf "$OUT/gpu-bench-logs.tar.gz" -C "$WORK" --exclude=runs . 2>/dev/null
  echo "copied the results and logs to $OUT"
fi
exit $RC
