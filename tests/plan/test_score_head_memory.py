"""The memory estimate of a reward model (`--rlhf_type rm`, score_head): a sequence classifier with one output, so
the parameters are those of transformers' Qwen2ForSequenceClassification (an untied model loads no output layer) and
there are no vocabulary-wide logits."""
import json

import pytest

from cli_runs import run_cli
from tunewise.plan.memory import estimate_memory

SMALL = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 1000, "torch_dtype": "float32"}


@pytest.mark.parametrize("tied", [True, False])
def test_the_parameters_are_the_sequence_classifiers(tied):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    config = {**SMALL, "tie_word_embeddings": tied}
    hf = Qwen2Config(**{k: v for k, v in config.items() if k != "model_type"}, num_labels=1)
    with torch.device("meta"):
        scorer, causal = Qwen2ForSequenceClassification(hf), Qwen2ForCausalLM(hf)
    count = lambda model: sum(p.numel() for p in model.parameters())  # tied weights are counted once
    assert estimate_memory(config, "full", score_head=True).parameters == count(scorer)
    assert estimate_memory(config, "full").parameters == count(causal)


def test_a_reward_model_plans_no_vocabulary_logits():
    kwargs = dict(batch_size=4, seq_len=512)
    causal = estimate_memory({**SMALL, "vocab_size": 150_000}, "lora", **kwargs)
    scorer = estimate_memory({**SMALL, "vocab_size": 150_000}, "lora", score_head=True, **kwargs)
    assert scorer.parts["logits"] == 4 * 512 * (4 + 2 * 4)  # one value a position, its float32 copy and gradient
    assert causal.parts["logits"] > 1000 * scorer.parts["logits"]
    own = ("logits", "weights", "gradients", "optimizer")  # the head: trained too (peft's SEQ_CLS modules_to_save)
    assert {k: v for k, v in scorer.parts.items() if k not in own} == \
        {k: v for k, v in causal.parts.items() if k not in own}
    assert scorer.trainable - causal.trainable == 64  # the score head's hidden-size row
    assert scorer.parts["gradients"] - causal.parts["gradients"] == 64 * 4  # float32, as the adapters
    assert scorer.parts["optimizer"] - causal.parts["optimizer"] == 64 * 4 * 2  # AdamW's two states


def test_the_rm_plan_of_the_embedded_model_against_dpo_on_the_same_pairs(tmp_path):
    parts = {}
    for kind in ("rm", "dpo"):
        assert run_cli("plan", "--rlhf_type", kind, "--dataset", "concise", "--output_dir", tmp_path / kind) == 0
        parts[kind] = json.loads((tmp_path / kind / "plan.json").read_text())["extra"]["memory"]["parts"]
    assert parts["rm"]["logits"] * 1000 < parts["dpo"]["logits"]
    assert parts["rm"]["activations"] == parts["dpo"]["activations"]  # the same pairs, the same batch
