"""`tunewise sft`, `dpo`, `rlhf` and `plan`: the commands over a recipe (tunewise.recipes).

A training run goes forward in stages, each its own module, and `train` reads top to bottom:

    resolve (plan/resolve.py) -> report (plan/report.py) -> open the run directory (train/rundir.py)
    -> build the trainer (train/build.py) -> fit, then summarise (train/fit.py)

With --nproc_per_node/--nnodes the launching parent stops after the run directory (`launch_ranks`): node 0's parent
prints the plan and makes it, and torchrun's processes then run `train` themselves. `tunewise plan` resolves and
reports the same run, then writes the plan files.
"""
from __future__ import annotations

from pathlib import Path

from tunewise import ranks
from tunewise.command import Command
from tunewise.errors import UserError
from tunewise.plan.report import print_plan
from tunewise.plan.resolve import resolve
from tunewise.recipes import Recipe, recipe
from tunewise.train import launch, rundir


def train(recipe: Recipe, args, sources: dict, argv: list[str], command: str) -> int:
    """One training run; a UserError (exit 2) for anything it cannot honour, before anything is written. `command`
    is the one typed (torchrun's processes run it again)."""
    run = resolve(recipe, args, sources)
    if run.args.quant_bits is not None:  # QLoRA: the plan only notes a bitsandbytes that cannot run here
        from tunewise.models.quantization import check_backend

        check_backend(run.args.quant_bits, run.device.device.kind, f"--quant_bits {run.args.quant_bits}")
    if missing := getattr(run.args, "vllm_missing", lambda: None)():  # GRPO's --use_vllm: the plan only notes it
        raise UserError(missing)
    rundir.check_new_target(run.args)
    return launch_ranks(run, argv, command) if launch.wants_launch(run.args) else drive(run)


def drive(run) -> int:
    """A resolved run in this process (one of torchrun's, or the only one), from its report to its summary."""
    from tunewise.train import build, fit

    if ranks.is_main_process() and not launch.launched():
        print_plan(run)
    try:
        run_dir, resume, created = rundir.open_run(run)
        try:
            trainer = build.build_trainer(run, run_dir, resume)
        except UserError:  # a model or adapter that fails to load leaves no new run directory behind
            if created:
                rundir.discard(run_dir)
            raise
        fit.fit(trainer, run, run_dir, resume)
        fit.summarise(trainer, run, run_dir)
    finally:
        end_run(run)
    return 0


def end_run(run) -> None:
    """Whatever way a run ends: its locks released, the trackers closed, the process group torn down."""
    rundir.release_locks()
    if ranks.is_main_process():
        from tunewise.train.trackers import finish_trackers

        finish_trackers(run.args.report_to)
    launch.end_process_group()


def launch_ranks(run, argv: list[str], command: str) -> int:
    """The launching parent: node 0's prints the plan, makes (or locks) the run directory and runs torchrun's
    processes on it; another node's writes nothing (its ranks get node 0's run directory over the process group).
    A launch that trained nothing takes its new run directory away again, as one process would."""
    args = run.args
    if args.node_rank > 0:
        print(f"--node_rank {args.node_rank} of --nnodes {args.nnodes}: joining node 0 at {args.master_addr}:"
              f"{args.master_port}, which prints the plan and writes the run directory.", flush=True)
        return launch.launch(args, argv, command, None)
    print_plan(run)
    run_dir = rundir.launch_run_dir(run)
    try:
        return launch.launch(args, argv, command, run_dir)
    except UserError:
        if not args.resume_from_checkpoint and not (run_dir / "logging.jsonl").exists():
            rundir.discard(run_dir)
        raise
    finally:
        rundir.release_locks()


def training(name: str) -> Command:
    chosen = recipe(name)
    return Command(chosen.args_class, lambda args, sources, argv: train(chosen, args, sources, argv, name))


SFT = training("sft")
DPO = training("dpo")
RLHF_TYPES = ("dpo", "grpo", "kto", "orpo", "simpo", "cpo", "rm")  # ms-swift's --rlhf_type values tunewise trains (recipes)


def rlhf_recipe(argv: list[str], required: bool = True) -> Recipe | None:
    """The recipe --rlhf_type names (None without the flag, where it is not required)."""
    from tunewise.flags import flag_groups

    kinds = [values for name, values in flag_groups(argv) if name == "rlhf_type"]
    if not kinds:
        if required:
            raise UserError(f"--rlhf_type is required: one of {', '.join(RLHF_TYPES)}.")
        return None
    kind = " ".join(kinds[-1])
    if kind not in RLHF_TYPES:
        raise UserError(f"--rlhf_type {kind}: tunewise trains {', '.join(RLHF_TYPES)}.")
    return recipe(kind)


RLHF = Command(lambda argv: rlhf_recipe(argv).args_class,
               lambda args, sources, argv: train(rlhf_recipe(argv), args, sources, argv, "rlhf"),
               extra_flags={"rlhf_type": None})


def plan_recipe(argv: list[str]) -> Recipe:
    """The recipe `tunewise plan` plans: sft, or the one --rlhf_type names."""
    return rlhf_recipe(argv, required=False) or recipe("sft")


def plan(args, sources: dict, argv: list[str]) -> int:
    from tunewise.plan.report import write_plan_files

    run = resolve(plan_recipe(argv), args, sources)
    out = Path(run.args.output_dir)
    check_plan_target(out, run.args.overwrite)
    print_plan(run)
    out.mkdir(parents=True, exist_ok=True)
    write_plan_files(out, run.step_plan, run.schedule, run.plan_record())
    print(f"wrote {out / 'plan.json'}, {out / 'lr_plan.csv'}, {out / 'lr_plan.png'}")
    return 0


PLAN_FILES = ("plan.json", "lr_plan.csv", "lr_plan.png")


def check_plan_target(out: Path, overwrite: bool) -> None:
    """plan writes its three files into --output_dir: refused where other files are (a run's plan among them)
    unless --overwrite true; an earlier plan alone is replaced."""
    from tunewise.files import check_writable, listing
    from tunewise.models.checkpoint import holds_run

    check_writable(out)
    shown = listing(out, skip=PLAN_FILES)
    if shown and not overwrite:
        what = "a training run" if holds_run(out) else "other files"
        raise UserError(f"--output_dir {out} holds {what} ({shown}); "
                        f"plan writes {', '.join(PLAN_FILES)} there. Choose an empty or new folder, or pass --overwrite "
                        "true to replace those three files anyway.")


def plan_help(args_class: type) -> str:
    from tunewise.flags import help_text

    return help_text(args_class, "plan").replace("Supervised fine-tuning", "Plan a fine-tune without training")


PLAN = Command(lambda argv: plan_recipe(argv).args_class, plan, help=plan_help, extra_flags={"rlhf_type": None})
