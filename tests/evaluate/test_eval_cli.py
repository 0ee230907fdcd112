"""`tunewise eval` on the embedded model and on the identity fine-tune of tests/conftest.py (trained once)."""
import json

import pytest

from cli_runs import run_cli
from tunewise.evaluate.identity import Identity
from tunewise.evaluate.report import Suite, evaluate_model

TARGET = Identity(["小黄", "Xiao Huang"], ["魔搭", "ModelScope"])
OLD = Identity(["小维", "TinyWise"], ["图维实验室", "Tunewise Labs"])


def test_base_model_does_not_have_the_new_identity(base_model):
    model, tok = base_model
    result = evaluate_model(model, tok, Suite(TARGET, OLD, max_new_tokens=48))
    m = result["metrics"]
    assert m["identity_accuracy_zh"] <= 0.1 and m["identity_accuracy_en"] <= 0.1, m
    assert m["identity_claims_old"] >= 0.5, m  # it answers with its own default identity
    assert m["general_accuracy"] is None and m["loss"] is None  # nothing asked


@pytest.mark.slow
def test_eval_compare_finetune_with_base(identity_run, tmp_path, capsys):
    ckpt = (identity_run / "last").resolve()
    out = tmp_path / "report.json"
    assert run_cli("eval", "--adapters", ckpt, "--compare", "tunewise-tiny", "--loss_dataset", "self_cognition",
                   "--output", out) == 0
    screen = capsys.readouterr().out
    report = json.loads(out.read_text(encoding="utf-8"))
    # the identity comes from the run's args.json, the old one from the base model's tunewise.json
    assert report["target_identity"] == TARGET.as_dict() and report["old_identity"] == OLD.as_dict()
    tuned, base = (m["metrics"] for m in report["models"])
    print(json.dumps({"tuned": tuned, "base": base}, indent=1))  # the measured numbers, with -s
    # Measured with the identity recipe in batches of 4 (750 steps) over seeds 42/1/2 x CPU kinds avx512/avx2/default
    # (2026-12-04, 1 torch thread; benchmarks/identity_recipe.py), named cleanly: identity 75-93.8 % (mean 0.833,
    # spread 0.1875), English 100 % in every run (spread 0; the bound stays at 0.6, as before this recipe, for floats
    # not measured), Chinese 50-87.5 % (mean 0.667, spread 0.375: 3x its spread exceeds its mean, so there is no
    # bound on it; the tiny model garbles Chinese replies as 我是小黄，由魔搭开发的小黄。, which only mention the identity).
    # Chinese replies that mention it: 87.5-100 % (mean 0.931, spread 0.125). Each bound sits at least 3x its spread
    # below the mean (8 questions a language: one answer is 12.5 points); the base scores 0 on each.
    assert tuned["identity_accuracy"] >= 0.25, tuned
    assert tuned["identity_accuracy_en"] >= 0.6 and tuned["identity_mentions_zh"] >= 0.55, tuned
    assert tuned["identity_mentions"] >= tuned["identity_accuracy"], tuned  # clean is the stricter reading
    assert base["identity_accuracy"] <= 0.1, base
    assert tuned["identity_claims_old"] == 0.0
    # the held-out additions: scored for both, and for the LoRA run against its own base (adapter disabled)
    assert report["general"] == {"kind": "heldout_addition", "count": 200}
    assert tuned["general_accuracy_base"] == pytest.approx(base["general_accuracy"])
    assert tuned["general_retention"] == pytest.approx(tuned["general_accuracy"] / base["general_accuracy"])
    assert tuned["copied_training_answer_share"] is not None and base["copied_training_answer_share"] is None
    assert tuned["loss"] < base["loss"] and tuned["perplexity"] < base["perplexity"]
    better = {r["metric"]: r["better"] for r in report["comparison"]}
    assert better["identity_accuracy"] == "A" and better["loss"] == "A"
    assert "summary: A better on" in screen and "你到底是谁？" in screen
    assert len(report["models"][0]["identity"]) == 16 and len(report["models"][0]["general"]) == 200


def test_eval_user_dataset_exact_and_contains(base_model, tmp_path, capsys):
    data = tmp_path / "general.jsonl"
    rows = [{"query": "Repeat: hello world", "response": "hello world"}, {"query": "12+30=?", "response": "42"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "r.json"
    assert run_cli("eval", "--model", "tunewise-tiny", "--dataset", data, "--match", "contains",
                   "--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭", "ModelScope",
                   "--max_new_tokens", 24, "--output", out) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["general"] == {"kind": "dataset:contains", "count": 2}
    (m,) = report["models"]
    replies = [g["reply"] for g in m["general"]]
    expected = sum(r["response"] in " ".join(reply.split()).casefold() for r, reply in zip(rows, replies)) / 2
    assert m["metrics"]["general_accuracy"] == expected, replies
    assert m["metrics"]["general_accuracy_base"] is None  # a base model has no baseline of its own
    assert "identity accuracy" in capsys.readouterr().out


def test_eval_flag_errors():
    assert run_cli("eval", "--match", "fuzzy") == 2
    assert run_cli("eval", "--adapters", "/nonexistent/checkpoint-1") == 2
