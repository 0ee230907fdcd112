"""The run-directory flags: where a run is written, its checkpoints and logs there, resuming from one, and the
trackers that log beside them."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import below_minimum, flag_field

REPORT_TO = ("tensorboard", "wandb", "swanlab", "none")


def installed(package: str) -> bool:
    """`package` can be imported (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec(package) is not None


@dataclass(frozen=True)
class RunDirArgs:
    output_dir: str = flag_field("output", "runs are written to OUTPUT_DIR/vN-YYYYMMDD-HHMMSS")
    add_version: bool = flag_field(True, "create a versioned sub-directory vN-... under --output_dir")
    overwrite: bool = flag_field(False, "write into an --output_dir that already holds files: with --add_version false "
                                        "what is there is deleted first; plan replaces its plan files among others")
    resume_from_checkpoint: str | None = flag_field(None, "a checkpoint directory, or 'latest' (the newest in --output_dir)")
    save_steps: int = flag_field(50, "save a checkpoint every N optimizer steps")
    save_total_limit: int | None = flag_field(2, "checkpoints kept; the best (lowest eval loss) and the last are always kept")
    logging_steps: int = flag_field(5, "log every N optimizer steps")
    report_to: list[str] = flag_field(["tensorboard"], "tensorboard | wandb | swanlab | none (wandb and swanlab log offline into the run directory without a login)", split_commas=True)

    def run_dir_problems(self) -> list[str]:
        problems = []
        unknown = [r for r in self.report_to if r not in REPORT_TO]
        if unknown:
            problems.append(f"--report_to {','.join(unknown)}: expected {', '.join(REPORT_TO)} (logging.jsonl and "
                            "the plots are always written).")
        problems += [f"--report_to {name}: the {name} package is not installed; pip install {name} (it then logs "
                     "offline into the run directory unless you have logged in), or leave it out."
                     for name in ("wandb", "swanlab") if name in self.report_to and not installed(name)]
        return problems + below_minimum(self, ("save_steps", "logging_steps"))
