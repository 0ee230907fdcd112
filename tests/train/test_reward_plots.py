"""rewards.png (tunewise.train.reward_plots) from a GRPO run's logging.jsonl records; none for a run without rewards."""
from tunewise.train.plots import plot_run
from tunewise.train.reward_plots import plot_rewards, reward_names


def grpo_log(steps=4):
    records = []
    for step in range(1, steps + 1):
        records.append({"step": step, "loss": 0.01 * step, "lr": 1e-5, "planned_lr": 1e-5,
                        "rewards/accuracy/mean": 0.5 + 0.1 * step, "rewards/accuracy/std": 0.2,
                        "rewards/my_plugin/mean": -0.1 * step, "rewards/my_plugin/std": 0.05,
                        "reward": 0.4 + 0.05 * step, "completions/mean_length": 10 + step,
                        "completions/min_length": 3, "completions/max_length": 16,
                        "completions/clipped_ratio": 0.25, "kl": 0.001 * step, "clip_ratio/region_mean": 0.0})
    records.append({"step": steps, "eval_loss": 0.1, "eval_rewards/accuracy/mean": 0.7,
                    "eval_rewards/my_plugin/mean": -0.2})
    return records


def test_a_grpo_log_draws_rewards_png_with_every_reward(tmp_path):
    import json

    log = grpo_log()
    assert reward_names(log) == ["accuracy", "my_plugin"]
    (tmp_path / "logging.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    written = plot_run(tmp_path)
    assert tmp_path / "rewards.png" in written and tmp_path / "loss.png" in written
    assert (tmp_path / "rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_log_without_rewards_draws_none(tmp_path):
    assert plot_rewards(tmp_path, [{"step": 1, "loss": 1.0}]) == []
    assert not (tmp_path / "rewards.png").exists()
