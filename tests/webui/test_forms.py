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
                "dataset": "self_cognition#200, tiny_skills#400", "pref_dataset": "concise", "kto_dataset": "",
                "grpo_dataset": "additions#200", "model_name": "小黄, Xiao Huang", "model_author": "魔搭, ModelScope",
                "system": "", "num_train_epochs": 5, "max_steps": -1, "learning_rate": "",
                "lr_scheduler_type": "cosine", "warmup_ratio": "", "lora_rank": 8, "lora_alpha": 32,
                "per_device_train_batch_size": "", "gradient_accumulation_steps": "", "max_length": 2048,
                "logging_steps": 5, "save_steps": 50, "output_dir": "output", "report_to": "none", "beta": 0.1,
                "loss_type": "sigmoid", "rpo_alpha": "", "desirable_weight": 1.0, "undesirable_weight": 1.0,
                "simpo_gamma": 1.0, "cpo_alpha": 0.0, "reward_funcs": "accuracy", "num_generations": 8,
                "max_completion_length": 512, "adapters": "", "extra": ""}


def args_of(command, argv):
    """The arguments the real command reads from the flags (`rlhf`: the class its --rlhf_type names)."""
    from tunewise.webui.stages import STAGES, stage_named

    stage = STAGES[stage_named(command, argv)]
    return parse(stage.args_class, argv[len(stage.command) - 1:])[0]


def picked(stage: str, **changes) -> dict:
    """The form after the user picks `stage` (the shared boxes at its command's defaults), then edits `changes`."""
    form = {**DEFAULT_FORM, "stage": stage}
    form.update({k: v["value"] for k, v in train.stage_updates(stage, defaults=True).items() if "value" in v})
    return {**form, **changes}


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


# each preference / RLHF stage: (the form's edits, the command's values they must reach)
STAGE_RUNS = {
    "kto": ({"kto_dataset": "rows.jsonl", "desirable_weight": 1.5},
            {"dataset": ["rows.jsonl"], "beta": 0.1, "desirable_weight": 1.5, "undesirable_weight": 1.0,
             "per_device_train_batch_size": 2}),  # picking kto sets a batch of 2: its KL term needs a second row
    "orpo": ({"beta": 0.2, "adapters": "output/v0/checkpoint-8"},
             {"dataset": ["concise"], "beta": 0.2, "adapters": ["output/v0/checkpoint-8"]}),
    "simpo": ({"simpo_gamma": 0.5}, {"dataset": ["concise"], "beta": 2.0, "simpo_gamma": 0.5, "cpo_alpha": 0.0,
                                      "loss_type": "simpo"}),
    "cpo": ({"loss_type": "hinge"}, {"dataset": ["concise"], "beta": 0.1, "cpo_alpha": 1.0, "loss_type": "hinge"}),
    "grpo": ({"reward_funcs": "accuracy, format", "num_generations": 4},
             {"dataset": ["additions#200"], "reward_funcs": ["accuracy", "format"], "num_generations": 4,
              "max_completion_length": 512, "beta": 0.04, "loss_type": "grpo"}),
}


@pytest.mark.parametrize("stage", list(STAGE_RUNS))
def test_each_rlhf_stage_previews_the_rlhf_command_with_its_own_flags(stage):
    """Picking a stage shows its data box and flags at its command's defaults; the preview is `tunewise rlhf
    --rlhf_type STAGE ...`, which the real command parses to the values the form shows; other stages' flags stay
    out of it."""
    from tunewise.webui.stages import STAGE_FLAGS, STAGES

    edits, expected = STAGE_RUNS[stage]
    form = picked(stage, **edits)
    command, argv = train_command(form)
    assert command == "rlhf" and argv[:2] == ["--rlhf_type", stage]
    assert train.preview(None, *form.values()) == command_line(command, argv) == \
        shlex.join(["tunewise", "rlhf", "--rlhf_type", stage, *argv[2:]])
    args = args_of(command, argv)
    assert {name: getattr(args, name) for name in expected} == expected
    written = {word[2:] for word in argv if word.startswith("--")}
    assert written & set(STAGE_FLAGS) <= set(STAGES[stage].flags)  # nothing of another stage's
    shown = train.stage_updates(stage, defaults=True)
    assert [box for box in ("dataset", "pref_dataset", "kto_dataset", "grpo_dataset") if shown[box]["visible"]] == \
        [STAGES[stage].data_box]
    assert {flag for flag in STAGE_FLAGS if shown[flag]["visible"]} == set(STAGES[stage].flags)
    # the boxes picking the stage fills are the command's defaults: the line with them trains as the bare command
    defaults = args_of(command, train_command(picked(stage, **{STAGES[stage].data_box: "x.jsonl"}))[1])
    bare = parse(STAGES[stage].args_class, ["--dataset", "x.jsonl"] +
                 {"grpo": ["--reward_funcs", "accuracy"], "kto": ["--per_device_train_batch_size", "2"]}.get(stage, []))[0]
    assert all(getattr(defaults, flag) == getattr(bare, flag) for flag in STAGES[stage].flags), stage


def test_a_stage_switch_keeps_what_the_user_typed_in_the_boxes_it_does_not_share():
    shown = train.stage_updates("simpo", defaults=False)
    assert not any("value" in change for change in shown.values())  # a YAML load's stage change keeps its values
    assert shown["pref_box"]["visible"] and not shown["loss_type"]["visible"]
    assert train.stage_updates("cpo", defaults=True)["cpo_alpha"]["value"] == 1.0
    assert train.stage_updates("simpo", defaults=True)["cpo_alpha"]["value"] == 0.0
    assert train.stage_updates("cpo", defaults=True)["loss_type"]["choices"] == ["sigmoid", "hinge", "ipo", "simpo"]
    assert not train.stage_updates("sft", defaults=True)["pref_box"]["visible"]
    with pytest.raises(UserError, match="stage 'ppo': expected one of sft, dpo, kto, orpo, simpo, cpo, grpo"):
        train_command({**DEFAULT_FORM, "stage": "ppo"})
    assert "rows with one reply and a label" in train.preview(None, *picked("kto").values())


@pytest.mark.parametrize("stage", ["sft", "dpo", *STAGE_RUNS])
def test_train_form_saved_as_yaml_runs_the_same_and_loads_back(tmp_path, stage):
    from tunewise.webui.stages import STAGES

    form = picked(stage, **STAGE_RUNS.get(stage, ({}, {}))[0], learning_rate="2e-4", warmup_ratio="0.1",
                  system="你是小黄。", gradient_accumulation_steps="4",
                  extra="--lora_dropout 0.1 --seed 7 --val_dataset tiny_skills#8 --per_device_eval_batch_size 4")
    upload = tmp_path / "uploaded rows.jsonl"
    path = tmp_path / f"{stage}.yaml"
    path.write_text(train_yaml(form, [str(upload)], str(path)), encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    command = " ".join(STAGES[stage].command)  # tunewise sft | dpo | rlhf --rlhf_type STAGE
    assert f"#   tunewise {command} --config {shlex.quote(str(path))}\n" in text and "小黄" in text  # not \u escapes
    command, argv = train_command(form, [str(upload)])
    # `tunewise STAGE --config FILE` resolves exactly the arguments the form's command line does
    assert args_of(command, [*argv[:len(STAGES[stage].command) - 1], "--config", str(path)]) == args_of(command, argv)
    loaded = form_from_yaml(str(path))
    assert train_command(loaded)[0] == command  # the form filled back runs the same command, saves the same file
    assert args_of(command, train_command(loaded)[1]) == args_of(command, argv)
    assert train_yaml(loaded, (), str(path)) == text
    assert loaded[STAGES[stage].data_box].endswith(", " + str(upload))
    assert loaded["stage"] == stage and loaded["learning_rate"] == "0.0002" and loaded["lora_rank"] == 8
    words = shlex.split(loaded["extra"])  # the flags without a box of their own, in the order the command lists them
    assert dict(zip(words[::2], words[1::2])) == {"--lora_dropout": "0.1", "--seed": "7",
                                                  "--val_dataset": "tiny_skills#8", "--per_device_eval_batch_size": "4"}
    # a config written by hand (no header): the stage from its keys, unknown keys refused with the file named
    hand = tmp_path / "hand.yaml"
    hand.write_text("dataset: [concise]\nbeta: 0.3\nmax_steps: 3\n", encoding="utf-8")
    assert form_from_yaml(str(hand))["stage"] == "dpo" and form_from_yaml(str(hand))["beta"] == 0.3
    hand.write_text("dataset: [concise]\ncpo_alpha: 0.5\n", encoding="utf-8")
    assert form_from_yaml(str(hand))["stage"] == "cpo" and form_from_yaml(str(hand))["cpo_alpha"] == 0.5
    hand.write_text("# tunewise rlhf --rlhf_type simpo --config hand.yaml\ndataset: [concise]\n", encoding="utf-8")
    simpo = form_from_yaml(str(hand))
    assert simpo["stage"] == "simpo" and simpo["beta"] == 2.0 and simpo["cpo_alpha"] == 0.0  # its boxes at defaults
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
