import json
import subprocess
import sys

import pytest

from cli_runs import IDENTITY_ONLY_FLAGS, run_cli
from tunewise.evaluate.skills import addition_accuracy
from tunewise.args import Sampling
from tunewise.infer.engine import Engine


def ask(engine, question):
    return engine.chat([{"role": "user", "content": question}], Sampling(max_new_tokens=60)).text


@pytest.mark.slow  # trains a model for more than a few seconds
def test_run_directory_layout(tmp_path):
    rc = run_cli("sft", "--dataset", "self_cognition#24", "--model_name", "N", "--model_author", "A",
                 "--max_steps", 6, "--save_steps", 2, "--eval_steps", 2, "--logging_steps", 1,
                 "--split_dataset_ratio", 0.25, "--save_total_limit", 1, "--per_device_train_batch_size", 2,
                 "--gradient_accumulation_steps", 2, "--output_dir", tmp_path)
    assert rc == 0
    (run,) = [p for p in tmp_path.iterdir() if p.name.startswith("v0-")]
    saved = json.loads((run / "args.json").read_text())
    assert saved["command"] == "sft"
    assert saved["args"]["max_steps"] == 6 and saved["sources"]["max_steps"] == "flag"
    assert saved["sources"]["learning_rate"] == "model"  # the built-in model's recommended value
    for name in ("plan.json", "lr_plan.csv", "lr_plan.png", "logging.jsonl", "loss.png", "lr.png"):
        assert (run / name).is_file(), name
    assert list((run / "runs").glob("events.out.tfevents.*"))
    assert not (run / ".staging").exists()
    log = [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]
    train = [r for r in log if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert all(r["lr"] == pytest.approx(r["planned_lr"], rel=1e-9) for r in train)
    assert all(r["tokens_per_s"] > 0 for r in train[1:])
    assert len([r for r in log if "eval_loss" in r]) == 3
    # save_total_limit 1 keeps the last and the best; both links resolve to complete checkpoints
    checkpoints = sorted(p.name for p in run.glob("checkpoint-*"))
    last, best = (run / "last").resolve(), (run / "best").resolve()
    assert last.name == "checkpoint-6" and best.name in checkpoints and len(checkpoints) <= 2
    for cp in (last, best):
        assert (cp / "adapter_config.json").is_file() and (cp / "adapter_model.safetensors").is_file()
        assert (cp / "tokenizer.json").is_file() and (cp / "chat_template.jinja").is_file()
        assert (cp / "trainer_state.json").is_file()


@pytest.mark.slow
def test_identity_finetune_takes_and_base_is_kept(identity_run, base_model):
    ckpt = (identity_run / "last").resolve()
    tuned = Engine.load(adapters=[str(ckpt)])
    zh, en = ask(tuned, "你是谁？"), ask(tuned, "Who are you?")
    assert "小黄" in zh and "魔搭" in zh, zh
    assert "Xiao Huang" in en and "ModelScope" in en, en

    base = Engine.load(model="tunewise-tiny")
    assert "小黄" not in ask(base, "你是谁？") and "Xiao Huang" not in ask(base, "Who are you?")
    model, tok = base_model
    before = addition_accuracy(model, tok)
    after = addition_accuracy(tuned.model, tuned.tokenizer)
    # The base scores 0.92 on every CPU kind measured (avx512, avx2, default).
    assert before >= 0.9
    # The mixed recipe keeps the additions: measured 0.910-0.930 in batches of 4 (750 steps) over seeds 42/1/2 x CPU
    # kinds avx512/avx2/default (2026-12-04, 1 torch thread; mean 0.917, spread 0.02; batch 1, 3,000 steps:
    # 0.900-0.940; identity data alone: 0.875-0.90). The bound, 0.85, sits 3x the spread below the mean.
    assert after >= before - 0.07, (before, after)
    # The base weights are untouched by the LoRA run: the base model scores exactly as before.
    assert addition_accuracy(base.model, base.tokenizer) == before
    # The retention watch ran along: before the first step and every 250 of the 750 steps, identity rising from
    # the base's 0 (measured 0 on every CPU kind) while the general-skill probes are logged from the same start.
    probes = [r for r in map(json.loads, (identity_run / "logging.jsonl").read_text().splitlines()) if "retention" in r]
    assert [r["step"] for r in probes] == [0, 250, 500, 750]
    # The last probe names the identity cleanly as eval does: 75-93.8 % over the runs above (mean 0.833, spread
    # 0.1875); the bound sits 3x the spread below the mean, and a mention is never rarer than a clean naming.
    assert probes[0]["identity"] == 0 and probes[-1]["identity"] > 0.25
    assert probes[-1]["identity_mentions"] >= probes[-1]["identity"]
    assert all(r["retention_start"] == probes[0]["retention"] for r in probes)


@pytest.mark.slow
def test_full_finetune_loads_with_plain_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert run_cli("sft", *IDENTITY_ONLY_FLAGS, "--train_type", "full", "--output_dir", tmp_path,
                   "--add_version", "false", "--save_steps", 10000) == 0
    ckpt = (tmp_path / "last").resolve()
    assert (ckpt / "model.safetensors").is_file() and not (ckpt / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    tok = AutoTokenizer.from_pretrained(ckpt)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=40, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Xiao Huang" in answer and "ModelScope" in answer, answer


@pytest.mark.parametrize("line, expected", [
    ('{"query": "a", "response": "b"', ":2: not valid JSON"),
    ('{"query": "a"}', ":2: missing field 'response'"),
    ('{"query": "who", "response": "{{NAME}}"}', ":2: messages[1].content still holds the placeholder {{NAME}}"),
])
def test_bad_data_fails_with_file_line_and_exit_2(tmp_path, line, expected):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"query": "q", "response": "r"}\n' + line + "\n", encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "sft", "--dataset", str(data), "--output_dir", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"{data}{expected}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing was written before the data was checked


@pytest.mark.parametrize("flag, value, message", [
    ("--torch_dtype", "fp16", "--torch_dtype fp16: expected one of auto, float32, bfloat16, float16."),
    ("--attn_impl", "flashy", "--attn_impl flashy: expected one of sdpa, eager, flash_attention_2"),
    ("--report_to", "nonsense", "--report_to nonsense: expected tensorboard, wandb, swanlab, none"),
])
def test_bad_model_and_logging_values_fail_before_anything_is_written(tmp_path, flag, value, message):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "sft", "--dataset", "self_cognition", flag, value,
                           "--output_dir", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
