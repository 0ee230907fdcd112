"""`tunewise eval` scores GRPO's rewards on held-out prompts (tunewise.evaluate.rewards): each reward's mean and
accuracy from greedy replies, for one model or a GRPO checkpoint against its base (--compare), a run's own rewards
by default, and bad reward flags stop before anything is generated."""
import json

import pytest

from cli_runs import run_cli
from tunewise.evaluate.identity import Identity
from tunewise.evaluate.report import Suite, addition_items, evaluate_model
from tunewise.evaluate.rewards import reward_suite

PLUGIN = """from tunewise.rewards import register


@register("short")
def short(prompts, completions, completion_ids, **kwargs):
    return [1.0 if len(ids) <= 8 else -1.0 for ids in completion_ids]
"""


pytestmark = pytest.mark.usefixtures("restore_reward_registry")  # tests/conftest.py


@pytest.mark.slow  # 200 greedy replies
def test_the_accuracy_reward_on_the_heldout_additions_is_the_general_skill(base_model):
    """The same 200 greedy replies scored twice: by `accuracy` against each row's solution (the sum) and by the
    general-skill check of the additions; the rewards' prompts are not asked a second time."""
    model, tok = base_model
    rewards = reward_suite(["accuracy", "format"], [], [], True, 32)
    assert len(rewards.rows) == 200 and rewards.rows[0].columns == {"solution": addition_items()[0].reference}
    suite = Suite(Identity(), general=addition_items(), general_kind="heldout_addition", max_new_tokens=32,
                  rewards=rewards)
    result = evaluate_model(model, tok, suite)
    m = result["metrics"]
    assert m["rewards/accuracy/mean"] == m["rewards/accuracy/accuracy"] == m["general_accuracy"] > 0.8, m
    assert m["rewards/format/mean"] == 0.0  # the embedded model never writes <think>...</think><answer>
    assert [r["reply"] for r in result["rewards"]] == [g["reply"] for g in result["general"]]
    assert result["rewards"][0]["rewards"]["accuracy"] == float(result["general"][0]["correct"])


@pytest.mark.slow  # trains a GRPO step, then evaluates two models
def test_a_grpo_checkpoint_against_its_base_with_the_runs_own_rewards(tmp_path, capsys):
    plugin = tmp_path / "short.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    prompts = tmp_path / "heldout.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {a} + {b}?"}],
                                           "solution": str(a + b)}) + "\n" for a, b in [(3, 4), (40, 9), (0, 8)]))
    run = tmp_path / "run"
    assert run_cli("rlhf", "--rlhf_type", "grpo", "--dataset", "additions#8", "--external_plugins", plugin,
                   "--reward_funcs", "accuracy", "short", "--num_generations", "4", "--per_device_train_batch_size",
                   "8", "--gradient_accumulation_steps", "1", "--max_completion_length", "8", "--max_steps", "1", "--save_steps", "1", "--report_to", "none",
                   "--output_dir", run, "--add_version", "false") == 0
    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert run_cli("eval", "--adapters", (run / "last").resolve(), "--compare", "tunewise-tiny",
                   "--reward_dataset", prompts, "--max_new_tokens", "16", "--retention_baseline", "false",
                   "--output", out) == 0
    screen = capsys.readouterr().out
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["rewards"] == {"funcs": ["accuracy", "short"], "prompts": "dataset", "count": 3}
    assert "rewards: the run's --reward_funcs accuracy short" in screen and "reward short: mean" in screen
    compared = {r["metric"]: r for r in report["comparison"]}
    for model, tag in zip(report["models"], "ab"):
        scored = model["rewards"]
        assert [r["solution"] for r in scored] == ["7", "49", "8"]
        for name in ("accuracy", "short"):
            values = [r["rewards"][name] for r in scored]
            assert model["metrics"][f"rewards/{name}/mean"] == pytest.approx(sum(values) / 3)
            assert compared[f"rewards/{name}/mean"][tag] == model["metrics"][f"rewards/{name}/mean"]
        assert all(r["rewards"]["accuracy"] == float(r["solution"] in r["reply"].split("=")[-1]) for r in scored)


@pytest.mark.parametrize("flags, message", [
    (["--reward_funcs", "acuracy"], "--reward_funcs acuracy: no such reward"),
    (["--external_plugins", "x.py"], "name them with --reward_funcs"),
    (["--reward_funcs", "accuracy", "--reward_dataset", "{no_solution}"], "needs the field 'solution'"),
])
def test_bad_reward_flags_stop_before_any_generation(flags, message, tmp_path, capsys):
    no_solution = tmp_path / "prompts.jsonl"
    no_solution.write_text(json.dumps({"messages": [{"role": "user", "content": "2+2="}]}) + "\n")
    argv = [str(no_solution) if f == "{no_solution}" else f for f in flags]
    assert run_cli("eval", "--model", "tunewise-tiny", *argv, "--output", tmp_path / "r.json") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
