"""rewards.png of a GRPO run, from the metrics TRL's GRPOTrainer logs into logging.jsonl: each reward's mean with its
std as a band and the weighted total (and their evaluation values as markers), the completion lengths (mean, the
min-max band, the share cut at --max_completion_length), and the KL to the reference with the share of tokens the
clip held."""
from __future__ import annotations

from pathlib import Path

REWARD_PREFIX = "rewards/"


def reward_names(log: list[dict]) -> list[str]:
    """The reward functions a log holds, in first-seen order (rewards/<name>/mean)."""
    names = {}
    for record in log:
        for key in record:
            if key.startswith(REWARD_PREFIX) and key.endswith("/mean"):
                names[key[len(REWARD_PREFIX):-len("/mean")]] = None
    return list(names)


def _series(records: list[dict], key: str) -> tuple[list, list]:
    kept = [r for r in records if r.get(key) is not None]
    return [r["step"] for r in kept], [r[key] for r in kept]


def plot_rewards(run_dir: Path, log: list[dict]) -> list[Path]:
    """Draw RUN_DIR/rewards.png when the log holds rewards; the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tunewise.files import replace_atomically

    names = reward_names(log)
    if not names:
        return []
    train = [r for r in log if any(k.startswith(REWARD_PREFIX) for k in r)]
    evals = [r for r in log if any(k.startswith("eval_" + REWARD_PREFIX) for k in r)]
    fig, (rewards, lengths, policy) = plt.subplots(3, 1, figsize=(6.5, 8), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        color = colors[i % len(colors)]
        steps, means = _series(train, f"{REWARD_PREFIX}{name}/mean")
        _, stds = _series(train, f"{REWARD_PREFIX}{name}/std")
        rewards.plot(steps, means, "-", color=color, label=name)
        if len(stds) == len(means):
            rewards.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                 color=color, alpha=0.15)
        steps, means = _series(evals, f"eval_{REWARD_PREFIX}{name}/mean")
        if steps:
            rewards.plot(steps, means, "o", color=color, label=f"{name} (eval)")
    if len(names) > 1:
        steps, totals = _series(train, "reward")
        rewards.plot(steps, totals, "--", color="black", label="weighted total")
    rewards.set_ylabel("reward (mean, band: std)")
    rewards.set_title(Path(run_dir).name)
    rewards.legend(fontsize="small")

    steps, means = _series(train, "completions/mean_length")
    if steps:
        lengths.plot(steps, means, "-", label="mean length")
        low, high = _series(train, "completions/min_length")[1], _series(train, "completions/max_length")[1]
        if len(low) == len(high) == len(means):
            lengths.fill_between(steps, low, high, alpha=0.2, label="min-max")
        lengths.set_ylabel("completion tokens")
        handles, labels = lengths.get_legend_handles_labels()
        steps, clipped = _series(train, "completions/clipped_ratio")
        if steps:
            right = lengths.twinx()
            right.plot(steps, clipped, ":", color="tab:red", label="cut at the limit")
            right.set_ylim(-0.02, 1.02)
            right.set_ylabel("share cut")
            more = right.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        lengths.legend(handles, labels, fontsize="small")

    steps, kl = _series(train, "kl")
    handles, labels = [], []
    if steps:
        policy.plot(steps, kl, "-", color="tab:purple", label="KL to the reference")
        policy.set_ylabel("KL")
        handles, labels = policy.get_legend_handles_labels()
    steps, clip = _series(train, "clip_ratio/region_mean")
    if steps:
        right = policy.twinx()
        right.plot(steps, clip, ":", color="tab:orange", label="tokens clipped")
        right.set_ylabel("share clipped")
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        policy.legend(handles, labels, fontsize="small")
    policy.set_xlabel("optimizer step")
    for ax in (rewards, lengths, policy):
        ax.grid(alpha=0.3)
    path = Path(run_dir) / "rewards.png"
    # through a temporary file, as plots.save_figure (which imports this module), so a reader never sees half of it
    replace_atomically(path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return [path]
