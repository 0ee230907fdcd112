"""Hostile flags, files and checkpoints: each is exit code 2 with a one-paragraph `tunewise CMD: error:` message,
no traceback, and no output folder left behind. (Hostile data files are tests/data/test_hostile_data.py.)"""
import json
import os
import subprocess
import sys

import pytest

from cli_runs import run_cli

DATA = ["--dataset", "self_cognition#8", "--model_name", "N", "--model_author", "A"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Broken models, checkpoints and configs to point flags at."""
    import shutil

    from tunewise.models.load import resolve_model

    root = tmp_path_factory.mktemp("hostile")
    tiny = resolve_model("tunewise-tiny")

    def model_copy(name):
        return shutil.copytree(tiny, root / name)

    (root / "no_config").mkdir()
    (root / "no_config" / "model.safetensors").write_bytes(b"")
    (model_copy("bad_config") / "config.json").write_text("{ not json")
    weights = model_copy("cut_weights") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "a_file").write_text("x")
    ckpt = root / "run" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (ckpt / "trainer_state.json").write_text('{"global_step": 2, "log_hist')
    (root / "run" / "args.json").write_text("{ cut sho")
    (root / "bad.yaml").write_text("learning_rate: [1,\n")
    (root / "unknown.yaml").write_text("lerning_rate: 1e-4\n")
    (root / "empty_dir").mkdir()
    (root / "ds.json").write_text("{ not json")
    return root


def cases(f):
    """(command, flags, a phrase the message must hold)."""
    return [
        ("sft", [*DATA, "--lora_dropout", "2"], "--lora_dropout 2.0: must be in [0, 1)"),
        ("sft", [*DATA, "--lora_dropout", "-0.1"], "--lora_dropout -0.1"),
        ("sft", [*DATA, "--target_modules", "qkv"], "--target_modules qkv: no module"),
        ("sft", [*DATA, "--target_modules", "q_proj,attn"], "--target_modules attn"),
        ("sft", [*DATA, "--learning_rate", "-1"], "--learning_rate -1.0: must be positive"),
        ("sft", [*DATA, "--learning_rate", "abc"], "--learning_rate: expected a number"),
        ("sft", [*DATA, "--num_train_epochs", "0"], "--num_train_epochs must be positive"),
        ("sft", [*DATA, "--max_length", "0"], "--max_length 0"),
        ("sft", [*DATA, "--warmup_ratio", "1.5"], "--warmup_ratio 1.5"),
        ("sft", [*DATA, "--warmup_ratio", "0.1", "--warmup_steps", "3"], "both set"),
        ("sft", [*DATA, "--lr_scheduler_type", "bogus"], "bogus"),
        ("sft", [*DATA, "--lr_scheduler_kwargs", "notjson"], "expected a JSON object"),
        ("sft", [*DATA, "--torch_dtype", "fp16"], "--torch_dtype fp16"),
        ("sft", [*DATA, "--attn_impl", "flashy"], "--attn_impl flashy"),
        ("sft", [*DATA, "--attn_impl", "flash_attention_2"], "flash-attention runs on CUDA GPUs only"),
        ("sft", [*DATA, "--torch_dtype", "float16"], "fp16 mixed precision (its loss scaling) needs a CUDA GPU"),
        ("sft", [*DATA, "--report_to", "mlflow"], "--report_to mlflow: expected tensorboard, wandb, swanlab, none"),
        ("sft", [*DATA, "--use_liger_kernel", "true"], "--use_liger_kernel true: Liger's kernels run on CUDA GPUs only"),
        ("sft", [*DATA, "--packing", "true", "--padding_free", "false"], "cannot be used with --padding_free false"),
        ("sft", [*DATA, "--group_by_length", "true"], "give --padding_free false as well"),
        ("dpo", ["--dataset", "concise#8", "--padding_free", "true"], "--padding_free true: an sft option"),
        ("dpo", ["--dataset", "concise#8", "--packing", "true"], "--packing true: an sft option"),
        ("sft", [*DATA, "--train_type", "qlora"], "--train_type qlora"),
        ("sft", [*DATA, "--truncation_strategy", "middle"], "--truncation_strategy middle"),
        ("sft", [*DATA, "--split_dataset_ratio", "1"], "--split_dataset_ratio 1.0"),
        ("sft", [*DATA, "--model_name", "a", "b", "c"], "--model_name takes one or two values"),
        ("sft", [*DATA, "--lerning_rate", "1e-4"], "Unknown flag --lerning_rate. Did you mean --learning_rate"),
        ("sft", [*DATA, "--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0"),
        ("sft", [*DATA, "--gradient_accumulation_steps", "x"], "expected an integer"),
        ("sft", [*DATA, "--nan_policy", "ignore"], "--nan_policy ignore"),
        ("sft", [*DATA, "--schedule_guard", "maybe"], "--schedule_guard maybe"),
        ("sft", [*DATA, "--deepspeed", str(f / "ds.json")], "ds.json"),
        ("sft", [*DATA, "--early_stop_on", "retention"], "needs --retention_eval_steps"),
        ("sft", [*DATA, "--resume_from_checkpoint", str(f / "missing")], "not a checkpoint directory"),
        ("sft", [*DATA, "--resume_from_checkpoint", str(f / "run" / "checkpoint-2")], "trainer_state.json cannot be read"),
        ("sft", [*DATA, "--config", str(f / "missing.yaml")], "cannot read it"),
        ("sft", [*DATA, "--config", str(f / "bad.yaml")], "not valid YAML"),
        ("sft", [*DATA, "--config", str(f / "unknown.yaml")], "unknown key 'lerning_rate'"),
        ("sft", [*DATA, "--model", str(f / "missing_model")], "no such directory"),
        ("sft", [*DATA, "--model", str(f / "no_config")], "has no config.json"),
        ("sft", [*DATA, "--model", str(f / "bad_config")], "config.json: not a readable model config"),
        ("sft", [*DATA, "--model", str(f / "cut_weights")], "not a complete safetensors file"),
        ("sft", [*DATA, "--output_dir", str(f / "a_file")], "is a file, not a folder"),
        ("sft", [*DATA, "--output_dir", str(f / "a_file" / "run")], "is a file, not a folder"),
        ("sft", [*DATA, "--eval_steps", "0"], "--eval_steps 0"),
        ("sft", [*DATA, "--save_steps", "-1"], "--save_steps -1"),
        ("sft", [*DATA, "--retention_threshold", "2"], "--retention_threshold 2.0"),
        ("sft", [*DATA, "--retention_dataset", "x.jsonl"], "only read by the retention watch"),
        ("sft", [*DATA, "--early_stop_patience", "0"], "--early_stop_patience 0"),
        ("sft", [*DATA, "--max_steps", "2.5"], "expected an integer"),
        ("sft", ["--dataset", "missing.jsonl"], "missing.jsonl"),
        ("sft", ["--model_name", "N"], "--dataset is required"),
        ("sft", ["stray", *DATA], "Unexpected value 'stray'"),
        ("plan", [*DATA, "--rlhf_type", "ppo"], "--rlhf_type ppo"),
        ("plan", [*DATA, "--lora_rank", "0", "--torch_dtype", "fp16"], "--lora_rank 0"),
        ("dpo", ["--dataset", "concise#4", "--loss_type", "bogus"], "--loss_type bogus"),
        ("dpo", ["--dataset", "concise#4", "--beta", "0"], "--beta 0.0: must be positive"),
        ("dpo", ["--dataset", "concise#4", "--adapters", str(f / "missing")], "no such checkpoint directory"),
        ("dpo", ["--dataset", "concise#4", "--adapters", "a", "b"], "give one checkpoint"),
        ("dpo", ["--dataset", "concise#4", "--adapters", str(f / "run" / "checkpoint-2")], "args.json: not a readable"),
        ("infer", ["--query", "hi", "--max_new_tokens", "0"], "--max_new_tokens 0"),
        ("infer", ["--query", "hi", "--temperature", "-1"], "--temperature -1.0"),
        ("infer", ["--query", "hi", "--top_p", "2"], "--top_p 2.0"),
        ("infer", ["--query", "hi", "--top_k", "-1"], "--top_k -1"),
        ("infer", ["--query", "hi", "--repetition_penalty", "0"], "--repetition_penalty 0.0"),
        ("infer", ["--query", "hi", "--adapters", str(f / "empty_dir")], "neither a LoRA checkpoint"),
        ("infer", ["--query", "hi", "--adapters", str(f / "run" / "checkpoint-2")], "args.json: not a readable"),
        ("infer", ["--query", "hi", "--model", str(f / "bad_config")], "not a readable model config"),
        ("export", ["--adapters", str(f / "run" / "checkpoint-2"), "--merge_lora", "false"], "nothing to export"),
        ("export", [], "give the one LoRA checkpoint"),
        ("export", ["--adapters", str(f / "bad_config")], "a full checkpoint is already a plain model"),
        ("export", ["--adapters", "x", "--torch_dtype", "half"], "--torch_dtype half"),
        ("eval", ["--adapters", str(f / "missing")], "no such checkpoint directory"),
        ("eval", ["--output", str(f / "empty_dir")], "this is a folder"),
    ]


def test_sixty_hostile_flags_files_and_checkpoints_are_each_a_clear_exit_2(files, tmp_path, capsys):
    table = cases(files)
    assert len(table) >= 60
    for k, (command, flags, phrase) in enumerate(table):
        out = tmp_path / f"out{k}"
        argv = [*flags] if command in ("infer", "export", "eval") or "--output_dir" in flags else [*flags, "--output_dir", out]
        code = run_cli(command, *argv)
        err = capsys.readouterr().err
        assert code == 2, (command, flags, err)
        assert err.startswith(f"tunewise {command}: error: ") and phrase in err, (command, flags, err)
        assert len(err.strip().splitlines()) == 1, err  # one paragraph
        assert not out.exists(), (command, flags)
    # nothing was created beside the broken inputs either (no half-made run folder)
    assert sorted(p.name for p in (files / "run").iterdir()) == ["args.json", "checkpoint-2"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_read_only_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert run_cli("sft", *DATA, "--output_dir", ro / "run") == 2


def test_no_traceback_in_a_real_process(files, tmp_path):
    for flags in ([*DATA, "--model", str(files / "cut_weights")], [*DATA, "--target_modules", "qkv"]):
        proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "sft", *flags, "--output_dir", str(tmp_path / "o")],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "error:" in proc.stderr
        assert not (tmp_path / "o").exists()
