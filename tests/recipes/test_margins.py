"""Each preference loss moves its own objective on the built-in `concise` pairs: a short `tunewise rlhf` run (the
whole path: plan, trainer, logging.jsonl) on the set's first 8 pairs, every step one batch of all of them, so the first
and the last logged values are the same pairs before and after training. The reward margin TRL logs rises: DPO's and
KTO's against the reference (0 at the first step), ORPO's, SimPO's and CPO's from the policy's own log-probabilities.

The bounds: rises measured over seeds 42, 1 and 2 (2026-12-05, CPU with avx512; seed 42 repeats to 4 digits with
ATEN_CPU_CAPABILITY avx2 and default), each bound at least 3x the spread below the smallest rise; the measurements
beside each bound."""
import json

import pytest

from cli_runs import read_log, run_cli

PAIRS = 8
STEPS = ["--gradient_accumulation_steps", "1", "--max_steps", "4", "--learning_rate", "1e-3", "--warmup_ratio", "0",
         "--logging_steps", "1", "--save_steps", "4", "--report_to", "none", "--add_version", "false"]
# rlhf_type -> (its batch: every row of the data, the smallest rise of rewards/margins the test accepts)
RUNS = {
    "dpo": (PAIRS, 0.70),      # 0.8283 / 0.8609 / 0.8395 (spread 0.033)
    "kto": (2 * PAIRS, 0.70),  # each pair as a desirable and an undesirable row: 0.8214 / 0.8562 / 0.8333 (0.035)
    "orpo": (PAIRS, 0.0015),   # 0.0111 / 0.0095 / 0.0087 (0.0024): its odds-ratio term weighs 0.1 beside the NLL
    "simpo": (PAIRS, 0.25),    # 0.3547 / 0.3856 / 0.3698 (0.031)
    "cpo": (PAIRS, 0.18),      # 0.2774 / 0.2629 / 0.2550 (0.022)
}
ORPO_LOG_ODDS_RISE = 0.008  # ORPO's own term, log sigmoid of the log odds ratio: 0.0151 / 0.0136 / 0.0141 (0.0016)


def concise_pairs(folder):
    """The first PAIRS rows of the built-in `concise` set, as a file (concise#N would sample by --seed)."""
    from tunewise.data.preference import PREFERENCE_SETS

    path = folder / "pairs.jsonl"
    path.write_text("\n".join(PREFERENCE_SETS["concise"].read_text(encoding="utf-8").splitlines()[:PAIRS]) + "\n",
                    encoding="utf-8")
    return path


def unpaired(pairs, folder):
    """Each pair as two KTO rows: the chosen reply desirable, the rejected one not."""
    from tunewise.data.preference import REJECTED, load_preferences

    path = folder / "unpaired.jsonl"
    rows = []
    for conv in load_preferences([str(pairs)]):
        prompt = conv.messages[:-1]
        rows += [{"messages": conv.messages, "label": True},
                 {"messages": prompt + [{"role": "assistant", "content": conv.extra[REJECTED]}], "label": False}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def margins_run(kind: str, folder, seed: int = 42) -> list[dict]:
    """The logged training steps of a short run of `kind` on the pairs (KTO: on them unpaired)."""
    data = concise_pairs(folder)
    if kind == "kto":
        data = unpaired(data, folder)
    batch, _ = RUNS[kind]
    out = folder / "run"
    assert run_cli("rlhf", "--rlhf_type", kind, "--dataset", data, "--per_device_train_batch_size", batch, *STEPS,
                   "--seed", seed, "--output_dir", out) == 0
    return [r for r in read_log(out) if "loss" in r]


# dpo and kto run a reference model beside the policy: 20-30 s each on the shared 2 cores, where the others take 15
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in ("dpo", "kto") else k for k in RUNS])
def test_the_reward_margin_rises_on_the_concise_pairs(tmp_path, kind):
    log = margins_run(kind, tmp_path)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    margins = [r["rewards/margins"] for r in log]
    assert margins[-1] - margins[0] >= RUNS[kind][1], margins
    if kind in ("dpo", "kto"):  # the policy starts as its reference: no margin before the first update
        assert margins[0] == 0
    if kind == "kto":  # desirable replies gain against the reference, undesirable ones lose
        assert log[-1]["rewards/chosen"] > 0 > log[-1]["rewards/rejected"]
    if kind == "orpo":
        assert log[-1]["log_odds_ratio"] - log[0]["log_odds_ratio"] >= ORPO_LOG_ODDS_RISE
