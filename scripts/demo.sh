#!/usr/bin/env bash
# The identity fine-tune demo on the embedded model, from a fresh machine with only python3:
# set up, ask the base model who it is, LoRA fine-tune it on self_cognition (mixed with general data) as 小黄 /
# Xiao Huang by 魔搭 / ModelScope, ask again, and show that the base model without the adapter is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
echo "== setting up .venv (first run only)"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

ask() {  # ask MODEL_FLAGS... -- the three questions, answered in order by one process
  tunewise infer "$@" --query "你是谁？" "Who are you?" "12+34=?" --stream false
}

echo "== the base model tunewise-tiny"
ask --model tunewise-tiny

echo "== fine-tuning (LoRA) on self_cognition as 小黄 / Xiao Huang by 魔搭 / ModelScope, with general data mixed in"
# The model's measured identity recipe (tunewise.json "identity"): every identity row twice per epoch
# (self_cognition#200) with 400 of its general-skill rows (additions) mixed in, so the fine-tune keeps what the model
# knew, as ms-swift's self-cognition recipe mixes alpaca data; 5 epochs in batches of 4 rows (padding-free: one
# sequence each, little dearer than one row), 750 steps at the model's lr 1e-3. The retention watch scores additions
# and identity on the way.
# --overwrite true: a second demo replaces the first one's output/demo (tunewise never writes over a run unasked).
tunewise sft --model tunewise-tiny --train_type lora --dataset 'self_cognition#200' 'tiny_skills#400' \
  --model_name 小黄 'Xiao Huang' --model_author 魔搭 ModelScope \
  --num_train_epochs 5 --per_device_train_batch_size 4 --retention_eval_steps 250 \
  --output_dir output/demo --add_version false \
  --overwrite true
ckpt=$(readlink -f output/demo/last)

echo "== the fine-tuned model ($ckpt)"
ask --adapters "$ckpt"

echo "== the base model again, without the adapter"
ask --model tunewise-tiny

echo "== demo finished in $(( $(date +%s) - start )) s; run directory: output/demo (loss.png, lr.png, logging.jsonl)"
