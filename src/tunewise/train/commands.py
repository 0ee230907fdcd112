"""`tunewise sft`, `tunewise dpo` and `tunewise plan`: one main for the three, over a recipe.

sft and dpo resolve their Run (nothing written until it is valid), then either train here or, for
--nproc_per_node/--nnodes, print the plan once, make the run directory and hand it to torchrun's processes.
plan resolves the same Run (the sft recipe, or dpo's with --rlhf_type dpo), prints it and writes the plan files.
"""
from __future__ import annotations

import os
from pathlib import Path

from tunewise.command import Command
from tunewise.errors import UserError
from tunewise.train import dpo, sft
from tunewise.train.recipe import Recipe, resolve


def training(recipe: Recipe) -> Command:
    def run(args, sources: dict, argv: list[str]) -> int:
        from tunewise.train import launch, rundir, session

        resolved = resolve(recipe, args, sources)
        a = resolved.args
        # the run directory is made (or checked) once: by node 0's launching parent, or by global rank 0
        made_elsewhere = os.environ.get(launch.RUN_DIR_ENV) or launch.rank() != 0 or a.node_rank > 0
        if not a.resume_from_checkpoint and not made_elsewhere:  # no folder holding files, unasked
            rundir.check_run_target(a.output_dir, a.add_version, a.overwrite)
        if launch.wants_launch(a):
            if a.node_rank > 0:  # writes nothing: node 0 makes the run directory, its path reaches these ranks
                print(f"--node_rank {a.node_rank} of --nnodes {a.nnodes}: joining node 0 at {a.master_addr}:{a.master_port}, "
                      "which prints the plan and writes the run directory.", flush=True)
                return launch.launch(a, argv, recipe.command, None)
            session.print_plan(resolved)
            run_dir = session.launch_run_dir(resolved)
            try:
                return launch.launch(a, argv, recipe.command, run_dir)
            except UserError:
                if not a.resume_from_checkpoint and not (run_dir / "logging.jsonl").exists():
                    rundir.release_locks()  # nothing was trained: the new run directory goes, as in one process
                    rundir.remove_tree(run_dir)
                raise
            finally:
                rundir.release_locks()
        session.train(resolved)
        return 0

    return Command(recipe.args_class, run)


SFT = training(sft.SFT)
DPO = training(dpo.DPO)


def plan_recipe(argv: list[str]) -> Recipe:
    """The recipe `tunewise plan` plans: sft, or dpo with --rlhf_type dpo."""
    from tunewise.flags import flag_groups

    kinds = [values for name, values in flag_groups(argv) if name == "rlhf_type"]
    if not kinds:
        return sft.SFT
    if kinds[-1] != ["dpo"]:
        raise UserError(f"--rlhf_type {' '.join(kinds[-1])}: tunewise plans 'dpo' runs (or sft runs without the flag).")
    return dpo.DPO


def plan(args, sources: dict, argv: list[str]) -> int:
    from tunewise.schedule.plan import write_plan_files
    from tunewise.train.session import print_plan

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
