"""The command lines the web UI's forms run, the Train form as YAML and back, the subprocess jobs, the two
languages: fast checks without a browser (the real commands' flag parser checks every flag a form writes)."""
import json
import re
import shlex

import pytest

from tunewise.errors import UserError
from tunewise.flags import parse
from tunewise.webui.commands import (TRAIN_FIELDS, command_line, eval_argv, export_argv, exported_path,
                                     form_from_yaml, train_command, train_yaml)
from tunewise.webui.i18n import TEXT, Texts, lang_code, t
from tunewise.webui.tabs import evaluate, export, train
from tunewise.webui.tabs.common import follow
from tunewise.webui.training import Job

# what the Train tab hands over untouched (gr.Number gives floats and ints, the rest strings)
DEFAULT_FORM = {"stage": "sft", "model": "tunewise-tiny", "train_type": "lora",
                "dataset": "self_cognition#200, tiny_skills#400", "pref_dataset": "concise",
                "model_name": "小黄, Xiao Huang", "model_author": "魔搭, ModelScope", "system": "",
                "num_train_epochs": 5, "max_steps": -1, "learning_rate": "", "lr_scheduler_type": "cosine",
                "warmup_ratio": "", "lora_rank": 8, "lora_alpha": 32, "per_device_train_batch_size": "",
                "gradient_accumulation_steps": "", "max_length": 2048, "logging_steps": 5, "save_steps": 50,
                "output_dir": "output", "report_to": "none", "beta": 0.1, "loss_type": "sigmoid", "rpo_alpha": "",
                "adapters": "", "extra": ""}


def args_of(command, argv):
    from tunewise.args import DpoArgs, SftArgs

    return parse({"sft": SftArgs, "dpo": DpoArgs}[command], argv)[0]


def test_train_form_makes_real_sft_and_dpo_command_lines():
    assert list(DEFAULT_FORM) == TRAIN_FIELDS
    command, argv = train_command(DEFAULT_FORM, ["/tmp/up load.jsonl"])
    assert command == "sft" and "--beta" not in argv and "--loss_type" not in argv
    args = args_of(command, argv)  # every flag is one `tunewise sft` reads, with a valid value
    assert args.dataset == ["self_cognition#200", "tiny_skills#400", "/tmp/up load.jsonl"]
    assert args.model_name == ["小黄", "Xiao Huang"] and args.num_train_epochs == 5 and args.report_to == ["none"]
    assert argv[argv.index("--max_steps") + 1] == "-1" and argv[argv.index("--num_train_epochs") + 1] == "5"
    assert command_line(command, argv) == shlex.join(["tunewise", "sft", *argv])
    assert shlex.split(command_line(command, argv))[2:] == argv  # a shell runs what the preview shows

    dpo_form = {**DEFAULT_FORM, "stage": "dpo", "beta": 0.25, "loss_type": "ipo", "rpo_alpha": "0.5",
                "adapters": "output/v0/checkpoint-8", "extra": "--label_smoothing 0.01 --seed 7"}
    command, argv = train_command(dpo_form)
    args = args_of(command, argv)
    assert command == "dpo" and args.dataset == ["concise"] and args.beta == 0.25 and args.loss_type == ["ipo"]
    assert args.rpo_alpha == 0.5 and args.adapters == ["output/v0/checkpoint-8"] and args.seed == 7
    assert train.preview(None, *dpo_form.values()) == command_line(command, argv)

    with pytest.raises(UserError, match="dataset"):
        train_command({**DEFAULT_FORM, "dataset": " , "})
    with pytest.raises(UserError, match="other flags"):
        train_command({**DEFAULT_FORM, "extra": "--system 'unclosed"})
    assert train.preview(None, *{**DEFAULT_FORM, "dataset": ""}.values()).startswith("(not ready: Give a dataset")


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_train_form_saved_as_yaml_runs_the_same_and_loads_back(tmp_path, stage):
    form = {**DEFAULT_FORM, "stage": stage, "learning_rate": "2e-4", "warmup_ratio": "0.1", "system": "你是小黄。",
            "gradient_accumulation_steps": "4", "extra": "--lora_dropout 0.1 --seed 7 --val_dataset tiny_skills#8"}
    upload = tmp_path / "uploaded rows.jsonl"
    path = tmp_path / f"{stage}.yaml"
    path.write_text(train_yaml(form, [str(upload)], str(path)), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    assert f"#   tunewise {stage} --config {shlex.quote(str(path))}\n" in text and "小黄" in text  # readable, not \u escapes
    command, argv = train_command(form, [str(upload)])
    # `tunewise STAGE --config FILE` resolves exactly the arguments the form's command line does
    assert args_of(command, ["--config", str(path)]) == args_of(command, argv)
    loaded = form_from_yaml(str(path))
    assert train_command(loaded)[0] == command  # the form filled back runs the same command, saves the same file
    assert args_of(command, train_command(loaded)[1]) == args_of(command, argv)
    assert train_yaml(loaded, (), str(path)) == text
    assert loaded[{"sft": "dataset", "dpo": "pref_dataset"}[stage]].endswith(", " + str(upload))
    assert loaded["stage"] == stage and loaded["learning_rate"] == "0.0002" and loaded["lora_rank"] == 8
    words = shlex.split(loaded["extra"])  # the flags without a box of their own, in the order the command lists them
    assert dict(zip(words[::2], words[1::2])) == {"--lora_dropout": "0.1", "--seed": "7", "--val_dataset": "tiny_skills#8"}
    # a config written by hand (no header): the stage from its keys, unknown keys refused with the file named
    hand = tmp_path / "hand.yaml"
    hand.write_text("dataset: [concise]\nbeta: 0.3\nmax_steps: 3\n", encoding="utf-8")
    assert form_from_yaml(str(hand))["stage"] == "dpo" and form_from_yaml(str(hand))["beta"] == 0.3
    hand.write_text("dataset: self_cognition\nlearning_rat: 1e-4\n", encoding="utf-8")
    with pytest.raises(UserError, match=rf"{re.escape(str(hand))}: unknown key 'learning_rat'"):
        form_from_yaml(str(hand))
    with pytest.raises(UserError, match="Unknown flag --no_such_flag"):
        train_yaml({**form, "extra": "--no_such_flag 1"})


def test_eval_and_export_command_lines(tmp_path):
    run = tmp_path / "v0-run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "checkpoint-4" / "adapter_config.json").write_text("{}")
    (run / "args.json").write_text("{}")
    (run / "best").symlink_to("checkpoint-4")
    argv = eval_argv({"a": str(run), "b": "tunewise-tiny", "model_name": "小黄, Xiao Huang", "max_new_tokens": 16.0,
                      "preference_dataset": "concise_heldout", "retention_baseline": False, "output": "r.json"})
    assert argv[:4] == ["--adapters", str(run / "best"), "--compare", "tunewise-tiny"]  # a run dir: its best
    assert argv[argv.index("--max_new_tokens") + 1] == "16" and argv[-4:] == ["--output", "r.json", "--overwrite", "true"]
    from tunewise.evaluate.cli import EvalArgs

    assert parse(EvalArgs, argv)[0].model_name == ["小黄", "Xiao Huang"]
    assert eval_argv({"a": "tunewise-tiny", "output": "r.json"})[:2] == ["--model", "tunewise-tiny"]
    with pytest.raises(UserError, match="evaluate"):
        eval_argv({"a": "", "output": "r.json"})
    assert export_argv({"adapters": str(run / "checkpoint-4"), "output_dir": "", "torch_dtype": "auto"}) == \
        ["--adapters", str(run / "checkpoint-4")]
    assert export_argv({"adapters": str(run), "output_dir": "m", "torch_dtype": "float16", "overwrite": True}) == \
        ["--adapters", str(run / "best"), "--output_dir", "m", "--torch_dtype", "float16", "--overwrite", "true"]
    assert export.preview("", "", "auto", False).startswith("(not ready: Pick the LoRA checkpoint")
    assert exported_path("x\nmerged model written to /a/b-merged\nload it with: ...") == "/a/b-merged"


def test_a_failed_command_reports_its_error_verbatim_and_started_what_was_previewed(tmp_path):
    values = ["/no/such/model", None, "", "", 8, "", "", True, str(tmp_path / "r.json")]
    previewed = evaluate.preview(*values)
    job = Job(tmp_path, "eval")
    updates = list(follow(job, "eval", evaluate_argv := shlex.split(previewed)[2:], every=0.2))
    assert job.command_line == previewed and evaluate_argv == eval_argv(dict(zip(evaluate.EVAL_FIELDS, values)))
    assert job.log_text().splitlines()[0] == "$ " + previewed
    status, log = updates[-1]
    assert status.startswith("failed (exit code 2): tunewise eval: error: --model /no/such/model: no such directory")
    assert status.split(": ", 1)[1] in log  # the very text the command printed
    assert job.stop() == "No run is going."


def test_eval_table_of_a_report():
    from tunewise.evaluate.report import METRICS

    report = {"models": [{"label": "ckpt", "metrics": {"identity_accuracy": 0.75, "loss": 1.25, "perplexity": None}},
                         {"label": "tunewise-tiny", "metrics": {"identity_accuracy": 0.5, "loss": 1.5}}]}
    headers, rows = evaluate.eval_table(report)
    assert headers == ["metric", "A: ckpt", "B: tunewise-tiny", "better"]
    assert rows == [["identity accuracy (names it cleanly)", "75.0%", "50.0%", "A"],
                    ["loss (assistant tokens)", "1.25", "1.5", "A"]]
    headers, rows = evaluate.eval_table({"models": report["models"][:1]}, "zh")
    assert headers == ["指标", "数值: ckpt"] and rows[0] == ["身份回答正确率（名称完整准确）", "75.0%"]
    assert all(f"metric.{key}" in TEXT for key in METRICS)  # every metric eval reports has its Chinese name


def test_form_helpers():
    from tunewise.webui.args import WebuiArgs
    from tunewise.webui.tabs.chat import text_of
    from tunewise.webui.training import plot_frames

    assert text_of([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab" == text_of("ab")
    assert WebuiArgs().host == "127.0.0.1" and WebuiArgs().port == 7860
    assert json.dumps(plot_frames([])[0].columns.tolist()) == '["step", "value", "series"]'
    assert train.upload_paths(["/a.jsonl"]) == ["/a.jsonl"] and train.upload_paths(None) == []


def test_every_text_has_english_and_chinese():
    for key, (en, zh) in TEXT.items():
        assert en.strip() and zh.strip(), key
        if key not in ("compare.out_a", "compare.out_b"):
            assert re.search(r"[\u4e00-\u9fff]", zh), f"{key}: {zh!r} is not Chinese"
    assert t("tab.train", "zh") == "训练" and t("tab.train") == "Train"
    assert lang_code("中文") == "zh" and lang_code("English") == "en" and lang_code(None) == "en"
    with pytest.raises(KeyError):
        Texts().add(object(), "no.such.key")


def test_a_long_log_keeps_its_command_on_top(tmp_path):
    """The plan alone is over 40 lines now (its device block among them): the log box still starts with the
    command that runs, then '...' where lines were left out, then the newest lines."""
    job = Job(tmp_path, "train")
    job.log_path = tmp_path / "log"
    job.log_path.write_text("$ tunewise sft --dataset x\n" + "".join(f"line {i}\n" for i in range(100)))
    shown = job.log_text().splitlines()
    assert shown[0] == "$ tunewise sft --dataset x" and shown[1] == "..." and shown[-1] == "line 99"
    assert len(shown) == 40
    job.log_path.write_text("$ tunewise sft --dataset x\nline 0\n")
    assert job.log_text().splitlines() == ["$ tunewise sft --dataset x", "line 0"]
