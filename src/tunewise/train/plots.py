"""loss.png and lr.png of a run, drawn from its logging.jsonl (and a GRPO run's rewards.png: reward_plots)."""
from __future__ import annotations

from pathlib import Path

from tunewise.files import read_jsonl, replace_atomically


def save_figure(fig, path: Path) -> None:
    """Write the png through a temporary file, so a reader never sees half of it."""
    replace_atomically(path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))


def plot_run(run_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    log = read_jsonl(run_dir / "logging.jsonl")
    written = []
    train = [r for r in log if "loss" in r]
    evals = [r for r in log if "eval_loss" in r]
    probes = [r for r in log if "retention" in r]
    if train or evals:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
        if evals:
            ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax.set_title(run_dir.name)
        handles, labels = ax.get_legend_handles_labels()
        if probes:  # the retention watch: its scores on a second axis, so loss and forgetting are read together
            right = ax.twinx()
            steps = [r["step"] for r in probes]
            right.plot(steps, [r["retention"] for r in probes], "s-", color="tab:green", label="general skill (probes)")
            if "identity" in probes[-1]:
                right.plot(steps, [r.get("identity") for r in probes], "^-", color="tab:red", label="identity (probes)")
            right.set_ylim(-0.02, 1.02)
            right.set_ylabel("probe accuracy")
            more_handles, more_labels = right.get_legend_handles_labels()
            handles, labels = handles + more_handles, labels + more_labels
        ax.legend(handles, labels, loc="center right", fontsize="small")
        ax.grid(alpha=0.3)
        save_figure(fig, run_dir / "loss.png")
        plt.close(fig)
        written.append(run_dir / "loss.png")
    lrs = [r for r in log if "lr" in r]
    if lrs:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in lrs], [r["planned_lr"] for r in lrs], "-", lw=3, alpha=0.4, label="planned")
        ax.plot([r["step"] for r in lrs], [r["lr"] for r in lrs], ".", label="optimizer")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.set_title(run_dir.name)
        ax.legend()
        ax.grid(alpha=0.3)
        save_figure(fig, run_dir / "lr.png")
        plt.close(fig)
        written.append(run_dir / "lr.png")
    from tunewise.train.reward_plots import plot_rewards

    return written + plot_rewards(run_dir, log)
