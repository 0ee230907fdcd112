"""`tunewise eval`: identity, general-skill retention, repetition, loss and GRPO rewards of a model or checkpoint;
--compare two.

  tunewise eval --adapters output/v0-.../checkpoint-N [--compare tunewise-tiny] [--output report.json]
  tunewise eval --model M --model_name 小黄 "Xiao Huang" --model_author 魔搭 ModelScope

The target identity comes from the flags, else from the run's args.json (model_name/model_author); the old one
from --old_name/--old_author, else the base model's default identity (tunewise.json of a built-in model).
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

from tunewise.command import Command
from tunewise.flags import below_minimum, flag_field, not_one_of
from tunewise.errors import UserError, raise_problems
from tunewise.files import write_json_atomic

MATCH_MODES = ("contains", "exact")


@dataclass
class EvalArgs:
    """Evaluate a model or checkpoint (`tunewise eval`): identity, general skills, repetition, loss, GRPO rewards; A/B with --compare."""

    adapters: list[str] = flag_field([], "a LoRA or full checkpoint of a run (its args.json gives the base model and identity)")
    model: str | None = flag_field(None, "base model (with --adapters), or the model to evaluate (without)")
    compare: str | None = flag_field(None, "a second checkpoint or model: the same prompts through both, side by side")
    model_name: list[str] = flag_field([], "target name: one value, or Chinese then English (default: the run's)")
    model_author: list[str] = flag_field([], "target author: one value, or Chinese then English (default: the run's)")
    old_name: list[str] = flag_field([], "old name a good fine-tune no longer claims (default: the base model's own)")
    old_author: list[str] = flag_field([], "old author (default: the base model's own)")
    dataset: list[str] = flag_field([], "general-skill prompts {query, response}; default: the built-in model's held-out "
                                "additions", split_commas=True)
    match: str = flag_field("contains", "a general reply is correct when it: contains | exact(ly equals) the reference")
    loss_dataset: list[str] = flag_field([], "conversations whose assistant-token loss and perplexity are reported",
                                 split_commas=True)
    preference_dataset: list[str] = flag_field([], "preference pairs (as for tunewise dpo, e.g. concise_heldout): how often "
                                           "the greedy reply sides with the chosen answer, and the log-prob and "
                                           "implicit-reward (LoRA: against the adapter disabled) ranking accuracy",
                                       split_commas=True)
    reward_funcs: list[str] = flag_field([], "GRPO rewards to score greedy replies with, as for tunewise rlhf "
                                             "(default: a GRPO run's own); each reward's mean and accuracy",
                                         split_commas=True)
    external_plugins: list[str] = flag_field([], "Python files that register rewards (as for tunewise rlhf)")
    reward_dataset: list[str] = flag_field([], "prompts with a solution for --reward_funcs (GRPO rows); default: "
                                               "the embedded model's 200 held-out additions", split_commas=True)
    output: str | None = flag_field(None, "write the full report (every prompt and reply) to this JSON file")
    overwrite: bool = flag_field(False, "replace an existing --output file")
    system: str | None = flag_field(None, "system prompt (default: the run's)")
    max_new_tokens: int = flag_field(128, "longest reply; a reply reaching it without end-of-turn counts as running on")
    max_length: int = flag_field(2048, "longest conversation for the loss (longer ones are cut on the left)")
    batch_size: int = flag_field(50, "prompts generated together")
    retention_baseline: bool = flag_field(True, "also score the base model's general skill (LoRA: adapter disabled)")
    torch_dtype: str = flag_field("auto", "auto | float32 | bfloat16 | float16")

    def __post_init__(self):
        problems = []
        problems += not_one_of(self, {"match": MATCH_MODES})
        for flag in ("model_name", "model_author", "old_name", "old_author"):
            if len(getattr(self, flag)) > 2:
                problems.append(f"--{flag} takes one or two values (Chinese, English).")
        problems += below_minimum(self, ("max_new_tokens", "max_length", "batch_size"))
        raise_problems(problems)


@dataclass
class Target:
    """One thing to evaluate: a base model, or a checkpoint (with its run's args) on a base."""

    model: str | None
    adapters: list[str]
    run_args: dict
    base_dir: str | None  # the base model's directory (for its tunewise.json), when known


def describe(model: str | None, adapters: list[str]) -> Target:
    from tunewise.models.load import DEFAULT_MODEL, resolve_model
    from tunewise.models.checkpoint import find_run_dir, read_run_args

    run_args = {}
    if adapters:
        try:
            run_args = read_run_args(find_run_dir(adapters[0]))
        except UserError:
            if model is None and not (Path(adapters[0]) / "config.json").is_file():
                raise
    base = model or run_args.get("model") or (None if adapters else DEFAULT_MODEL)
    return Target(model, list(adapters), run_args, resolve_model(base) if base else None)


def compare_target(spec: str) -> Target:
    """--compare X: a checkpoint directory of a run (LoRA or full) or a model (built-in name, directory, hub id)."""
    from tunewise.models.checkpoint import is_checkpoint

    path = Path(spec).expanduser()
    if is_checkpoint(str(path)):
        return describe(None, [str(path)])
    return describe(spec, [])


def training_responses(run_args: dict) -> list[str]:
    """The replies a run was trained on (placeholders filled as in training); [] when its data is not readable."""
    from tunewise.data.formats import load_conversations

    if not run_args.get("dataset"):
        return []
    try:
        convs = load_conversations(run_args["dataset"], run_args.get("model_name", []),
                                   run_args.get("model_author", []), run_args.get("seed", 42))
    except UserError as e:
        print(f"note: the run's training data cannot be read ({e}); parroting is not measured.", file=sys.stderr)
        return []
    return [c.messages[-1]["content"] for c in convs]


def build_suite(args: EvalArgs, targets: list[Target]):
    from tunewise.data.formats import load_conversations
    from tunewise.evaluate.identity import Identity
    from tunewise.evaluate.report import Suite, addition_items, dataset_items
    from tunewise.models.load import builtin_meta

    target = Identity(args.model_name, args.model_author)
    for t in targets:  # the flags win; else the first run that set both
        if target.names and target.authors:
            break
        if t.run_args.get("model_name") or t.run_args.get("model_author"):
            target = Identity(target.names or list(t.run_args.get("model_name") or []),
                              target.authors or list(t.run_args.get("model_author") or []))
    old = Identity(args.old_name, args.old_author)
    if not old:
        for t in targets:
            default = Identity.from_dict(builtin_meta(t.base_dir).get("default_identity")) if t.base_dir else Identity()
            if default:
                old = default
                break
    suite = Suite(target, old or None, max_new_tokens=args.max_new_tokens, max_length=args.max_length,
                  batch_size=args.batch_size)
    if args.dataset:
        suite.general, suite.general_kind = dataset_items(args.dataset), f"dataset:{args.match}"
    elif any(t.base_dir and builtin_meta(t.base_dir) for t in targets):
        suite.general, suite.general_kind = addition_items(), "heldout_addition"
    if args.loss_dataset:
        suite.loss_conversations = load_conversations(args.loss_dataset, target.names, target.authors)
    suite.rewards = reward_suite(args, targets)
    return suite


def reward_suite(args: EvalArgs, targets: list[Target]):
    """--reward_funcs (or the first GRPO run's own rewards and plugins) on their prompts; None without rewards."""
    from tunewise.evaluate.rewards import reward_suite as make
    from tunewise.models.load import builtin_meta

    names, plugins = args.reward_funcs, args.external_plugins
    scored_by_models = next((t.run_args["reward_model"] for t in targets if t.run_args.get("reward_model")), None)
    if scored_by_models:
        print(f"note: the run's --reward_model {' '.join(scored_by_models)} is not scored here: tunewise eval scores "
              "reward functions (--reward_funcs) only.", flush=True)
    if not names:
        run = next((t.run_args for t in targets if t.run_args.get("reward_funcs")), None)
        if run is None:
            if plugins or args.reward_dataset:
                raise UserError("--external_plugins and --reward_dataset score rewards: name them with --reward_funcs.")
            return None
        names, plugins = run["reward_funcs"], plugins or run.get("external_plugins") or []
        print(f"rewards: the run's --reward_funcs {' '.join(names)}", flush=True)
    builtin = any(t.base_dir and builtin_meta(t.base_dir) for t in targets)
    return make(names, plugins, args.reward_dataset, builtin, args.max_new_tokens)


def non_finite_parameters(model) -> list[str]:
    import torch

    return [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]


def run_one(args: EvalArgs, target: Target, suite) -> dict:
    import contextlib

    from tunewise.evaluate.report import evaluate_model
    from tunewise.infer.engine import Engine

    engine = Engine.load(model=target.model, adapters=target.adapters, system=args.system, dtype=args.torch_dtype)
    bad = non_finite_parameters(engine.model)
    if bad:
        print(f"WARNING: {engine.checkpoint.label}: {len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]}); its "
              "replies are not meaningful (the run that wrote it diverged; evaluate an earlier checkpoint).",
              file=sys.stderr, flush=True)
    suite = dataclasses.replace(suite, training_responses=training_responses(target.run_args))

    @functools.cache
    def full_base():  # a full checkpoint's base model, loaded once for both the retention and the reference pass
        from tunewise.models.load import load_model

        return load_model(target.base_dir, args.torch_dtype).eval()

    @contextlib.contextmanager
    def base_model():
        if engine.checkpoint.adapter:  # LoRA: the same weights with the adapter switched off
            with engine.model.disable_adapter():
                yield engine.model
        else:
            yield full_base()

    wants_base = args.retention_baseline and target.adapters and target.base_dir is not None
    result = evaluate_model(engine.model, engine.tokenizer, suite, engine.checkpoint.system,
                            base_model if wants_base else None)
    if args.preference_dataset:
        from tunewise.data.preference import load_preferences, trl_row
        from tunewise.evaluate.preference import score

        rows = [trl_row(c, engine.checkpoint.system) for c in load_preferences(args.preference_dataset)]
        # the reference of the implicit reward is the starting model: LoRA's adapter disabled, or the base model
        reference = None
        if engine.checkpoint.adapter:
            reference = engine.model.disable_adapter
        elif target.adapters and target.base_dir:
            reference = full_base()
        scores = score(engine.model, engine.tokenizer, rows, reference, engine.checkpoint.system)
        result["metrics"].update({f"preference_{k}": v for k, v in scores.items() if k != "pairs"})
    return {"label": engine.checkpoint.label, "base": engine.checkpoint.base, "adapter": engine.checkpoint.adapter,
            "system": engine.checkpoint.system, **result}


def check_output_file(out: Path, overwrite: bool) -> None:
    from tunewise.files import check_writable

    check_writable(out.parent, "--output")
    if out.is_dir():
        raise UserError(f"--output {out}: this is a folder; give a file name such as {out / 'eval.json'}.")
    if out.exists() and not overwrite:
        raise UserError(f"--output {out} already exists; choose another name or pass --overwrite true to replace it.")


def run(args: EvalArgs, sources: dict, argv: list[str]) -> int:
    from tunewise.evaluate.report import compare_metrics, format_report

    if len(args.adapters) > 1:
        raise UserError("--adapters: give one checkpoint; use --compare for a second.")
    if args.output:  # checked before minutes of evaluation, not after
        check_output_file(Path(args.output), args.overwrite)
    targets = [describe(args.model, args.adapters)]
    if args.compare:
        targets.append(compare_target(args.compare))
    suite = build_suite(args, targets)
    models = [run_one(args, t, suite) for t in targets]  # one at a time: only one model in memory
    report = {
        "command": "eval",
        "target_identity": suite.target.as_dict(),
        "old_identity": suite.old.as_dict() if suite.old else None,
        "general": {"kind": suite.general_kind, "count": len(suite.general)},
        "rewards": ({"funcs": suite.rewards.names, "prompts": suite.rewards.kind, "count": len(suite.rewards.rows)}
                    if suite.rewards else None),
        "max_new_tokens": args.max_new_tokens,
        "models": models,
    }
    if len(models) == 2:
        report["comparison"] = compare_metrics(models[0]["metrics"], models[1]["metrics"])
    print(format_report(report), flush=True)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, report)
        print(f"wrote {out}")
    return 0



COMMAND = Command(EvalArgs, run)
