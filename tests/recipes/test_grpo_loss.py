"""GRPO's flags map to the loss they name: TRL 1.16's GRPOTrainer, built by tunewise from `tunewise rlhf --rlhf_type
grpo` flags (parse -> plan -> build_trainer, as a run builds it), gives the advantages and losses computed here by
hand, in plain Python from the formulas of the papers:

  advantage   A_i = (r_i - mean of r over its group) / (std + 1e-4), std over the group (--scale_rewards group), over
              the whole generation batch (batch), or no division (none); std is the unbiased one (Bessel), r the
              --reward_weights-weighted sum of the --reward_funcs
  ratio       rho = exp(logp - logp_old), per token (--importance_sampling_level token) or one per completion, the
              exp of the mean token log-ratio (sequence, GSPO)
  token loss  -min(rho A, clip(rho, 1 - epsilon, 1 + epsilon_high) A) + beta rho (exp(ref - logp) - (ref - logp) - 1)
              (the KL term is Schulman's k3 estimator times the ratio: TRL 1.16's use_bias_correction_kl, on by
              default, DeepSeek-V3.2's unbiased KL; ms-swift adds k3 alone. On policy rho is 1 and the two agree in
              value, not in gradient)
  loss        grpo: the mean over completions of each completion's token mean; bnpo: the token mean of the
              micro-batch; dr_grpo: the token sum over (completions x --max_completion_length); dapo: the token sum
              over the tokens of the whole generation round; all but dapo divided by the accumulation steps

The log-probabilities are the policy's (the embedded model, LoRA), temperature-scaled, from a plain forward pass of
our own; the old and reference log-probabilities are chosen offsets from them, so that the clip bites on both
sides and the KL term is not small. The rewards come from a plugin that returns each row's given reward.
"""
import math

import pytest

PLUGIN = '''from tunewise.rewards import register


@register("first")
def first(prompts, completions, r1=None, **kwargs):
    return [0.0 if r is None else float(r) for r in (r1 or [None] * len(completions))]


@register("second")
def second(prompts, completions, r2=None, **kwargs):
    return [0.0 if r is None else float(r) for r in (r2 or [None] * len(completions))]
'''
TEMPERATURE, EPSILON, EPSILON_HIGH, BETA, MAX_COMPLETION = 0.7, 0.2, 0.28, 0.04, 6


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """(flags) -> the GRPOTrainer tunewise builds for `tunewise rlhf --rlhf_type grpo FLAGS` (cached)."""
    from tunewise.args import GrpoArgs
    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes.grpo import RECIPE
    from tunewise.rewards import plugins
    from tunewise.train.build import build_trainer

    root = tmp_path_factory.mktemp("grpo_loss")
    plugin = root / "given_rewards.py"
    plugin.write_text(PLUGIN, encoding="utf-8")
    saved = dict(plugins.REGISTRY)
    built = {}

    def trainer(*flags):
        if flags not in built:
            out = root / f"run{len(built)}"
            args, sources, _ = parse(GrpoArgs, [
                "--dataset", "additions#8", "--external_plugins", str(plugin), "--reward_funcs", "first", "second",
                "--num_generations", "4", "--max_completion_length", str(MAX_COMPLETION),
                "--temperature", str(TEMPERATURE), "--epsilon", str(EPSILON), "--beta", str(BETA),
                "--lora_dropout", "0", "--max_steps", "1", "--report_to", "none", "--output_dir", str(out), *flags])
            built[flags] = build_trainer(resolve(RECIPE, args, sources), out, callbacks=[])
        return built[flags]

    yield trainer
    plugins.REGISTRY.clear()
    plugins.REGISTRY.update(saved)


# ---- advantages -------------------------------------------------------------------------------------------------

R1 = [1.0, 0.0, 0.5, 0.0, 2.0, 2.0, 2.0, 2.0]  # group 2: every completion alike
R2 = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
WEIGHTS = [1.0, 0.5]
# r = R1 + 0.5 R2 = [1, 0.5, 0.5, 0 | 2, 2, 2, 2]; group means 0.5 and 2
# (the mean stays the group's with every --scale_rewards)
# group std (unbiased): sqrt((0.25 + 0 + 0 + 0.25) / 3) = 0.408248 and 0
# batch std (unbiased, over all 8 around their mean 1.25): sqrt((0.0625 + 2 * 0.5625 + 1.5625 + 4 * 0.5625) / 7)
#                                                       = sqrt(5 / 7) = 0.845154
EXPECTED_ADVANTAGES = {
    "group": [0.5 / 0.408348, 0.0, 0.0, -0.5 / 0.408348, 0.0, 0.0, 0.0, 0.0],
    "batch": [0.5 / 0.845254, 0.0, 0.0, -0.5 / 0.845254, 0.0, 0.0, 0.0, 0.0],
    "none": [0.5, 0.0, 0.0, -0.5, 0.0, 0.0, 0.0, 0.0],
}


def std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_the_hand_computed_numbers_are_the_formulas():
    """The literal EXPECTED_ADVANTAGES above, recomputed from the rewards (a typo in them fails here)."""
    r = [a + WEIGHTS[1] * b for a, b in zip(R1, R2)]
    groups = [r[:4], r[4:]]
    for scale, expected in EXPECTED_ADVANTAGES.items():
        got = []
        for g in groups:
            spread = {"group": std(g), "batch": std(r), "none": None}[scale]
            mean = sum(g) / len(g)
            got += [(v - mean) / (spread + 1e-4) if spread is not None else v - mean for v in g]
        assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_are_group_normalised_as_scale_rewards_says(build, scale):
    """Eight completions of two prompts, sampled by the policy and scored by the two rewards: TRL's advantages and
    the reward means and stds it logs are the hand-computed ones."""
    trainer = build("--scale_rewards", scale, "--reward_weights", "1", "0.5", "--per_device_train_batch_size", "8",
                    "--gradient_accumulation_steps", "1")
    assert (trainer.scale_rewards, trainer.reward_weights.tolist()) == (scale, WEIGHTS)
    prompts = [[{"role": "user", "content": q}] for q in ("What is 2 + 3?", "12加7等于多少？")]
    rows = [{"prompt": prompts[i // 4], "solution": "x", "r1": R1[i], "r2": R2[i], "row_origin": f"row {i}"}
            for i in range(8)]
    trainer.model.train()
    trainer._metrics["train"].clear()
    out = trainer._generate_and_score_completions(rows)
    assert out["advantages"].tolist() == pytest.approx(EXPECTED_ADVANTAGES[scale], abs=1e-5)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert logged["rewards/first/mean"] == pytest.approx(sum(R1) / 8)
    assert logged["rewards/first/std"] == pytest.approx(std(R1), rel=1e-5)
    assert logged["rewards/second/mean"] == pytest.approx(sum(R2) / 8)
    assert logged["frac_reward_zero_std"] == (0.5 if scale != "batch" else 0.0)  # group 2's std is 0
    assert out["ref_per_token_logps"].shape == out["completion_ids"].shape  # beta > 0: the reference was scored


# ---- the loss ---------------------------------------------------------------------------------------------------

ADVANTAGES = [1.2, -0.8, 0.5, -0.9]
# per completion, per token: old = logp + OLD_SHIFT (ratio exp(-shift): 0.61, 1.05, 1.42, 0.74, 1.22, ...), and
# ref = logp + REF_SHIFT (the KL term exp(d) - d - 1)
OLD_SHIFT = [[0.5, -0.05, -0.35], [0.3, -0.2, 0.0, 0.4, -0.5], [-0.4, 0.1], [0.25, -0.3, 0.15, 0.05]]
REF_SHIFT = [[0.3, -0.6, 0.1], [-0.2, 0.4, 0.0, 0.7, -0.1], [0.5, -0.5], [0.2, 0.2, -0.3, 0.9]]
REPLIES = ["5", "2 + 3 = 5", "6", "It is 5."]  # tokenised and cut to the shift lists' lengths


def loss_batch(trainer):
    """The micro-batch, with its policy log-probabilities from our own forward pass (logits / temperature)."""
    import torch

    tok = trainer.processing_class
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                     tokenize=True, return_dict=False)
    prompt = list(prompt["input_ids"] if isinstance(prompt, dict) else prompt)
    lengths = [len(s) for s in OLD_SHIFT]
    replies = [(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] * 8)[:n]
               for text, n in zip(REPLIES, lengths)]
    width = max(lengths)
    completion_ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in replies])
    completion_mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
    prompt_ids = torch.tensor([prompt] * len(replies))
    with torch.no_grad():
        logits = trainer.model(input_ids=torch.cat([prompt_ids, completion_ids], 1),
                               attention_mask=torch.cat([torch.ones_like(prompt_ids), completion_mask], 1)).logits
    logps = torch.log_softmax(logits[:, len(prompt) - 1:-1].double() / TEMPERATURE, -1)
    logps = logps.gather(-1, completion_ids[..., None])[..., 0]
    policy = [[logps[i, t].item() for t in range(n)] for i, n in enumerate(lengths)]

    def padded(shifts):
        return torch.tensor([[p + s for p, s in zip(row, srow)] + [0.0] * (width - len(row))
                             for row, srow in zip(policy, shifts)])

    # this micro-batch is half of a generation round of 2 micro-batches; the other half holds 13 completion tokens
    round_tokens = sum(lengths) + 13
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": torch.tensor(ADVANTAGES),
              "old_per_token_logps": padded(OLD_SHIFT), "ref_per_token_logps": padded(REF_SHIFT),
              "num_items_in_batch": torch.tensor(round_tokens)}
    return inputs, round_tokens


def hand_loss(loss_type, level, round_tokens, accumulation=2):
    """The loss of the micro-batch, from the formulas (module docstring), its clipped-token shares and mean KL."""
    token_losses, clipped_low, clipped_high, kls = [], [], [], []
    for a, old, ref in zip(ADVANTAGES, OLD_SHIFT, REF_SHIFT):
        log_ratios = [-s for s in old]  # logp - old
        if level == "sequence":
            log_ratios = [sum(log_ratios) / len(log_ratios)] * len(log_ratios)
        row = []
        for lr, d in zip(log_ratios, ref):
            rho = math.exp(lr)
            clipped = min(max(rho, 1 - EPSILON), 1 + EPSILON_HIGH)
            kl = (math.exp(d) - d - 1) * rho  # d = ref - logp
            kls.append(kl)
            row.append(-min(rho * a, clipped * a) + BETA * kl)
            clipped_low.append(rho < 1 - EPSILON and a < 0)
            clipped_high.append(rho > 1 + EPSILON_HIGH and a > 0)
        token_losses.append(row)
    tokens = sum(len(r) for r in token_losses)
    total = sum(sum(r) for r in token_losses)
    loss = {"grpo": sum(sum(r) / len(r) for r in token_losses) / len(token_losses) / accumulation,
            "bnpo": total / tokens / accumulation,
            "dr_grpo": total / (len(token_losses) * MAX_COMPLETION) / accumulation,
            "dapo": total / round_tokens}[loss_type]
    return loss, sum(clipped_low) / tokens, sum(clipped_high) / tokens, sum(kls) / tokens


def test_the_four_loss_types_differ_on_this_batch():
    """So that a --loss_type mapped to the wrong TRL loss fails the test below."""
    values = [hand_loss(t, "token", 27)[0] for t in ("grpo", "bnpo", "dr_grpo", "dapo")]
    assert min(abs(a - b) for i, a in enumerate(values) for b in values[i + 1:]) > 1e-3, values
    _, low, high, _ = hand_loss("grpo", "token", 27)
    assert low > 0 and high > 0  # the clip bites on both sides


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_the_loss_is_the_one_loss_type_names(build, loss_type, level):
    """TRL's loss (GRPOTrainer._compute_loss, what compute_loss returns to the training step) and the clip ratios it
    logs, for a micro-batch of 4 completions with 2 accumulation steps per optimizer step, equal the hand-computed
    ones to float precision."""
    trainer = build("--loss_type", loss_type, "--importance_sampling_level", level, "--epsilon_high",
                    str(EPSILON_HIGH), "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2")
    assert (trainer.loss_type, trainer.importance_sampling_level, trainer.beta, trainer.epsilon_low,
            trainer.epsilon_high, trainer.temperature, trainer.args.steps_per_generation) == \
        (loss_type, level, BETA, EPSILON, EPSILON_HIGH, TEMPERATURE, 2)
    inputs, round_tokens = loss_batch(trainer)
    expected, low, high, kl = hand_loss(loss_type, level, round_tokens)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 2  # what the training loop sets for each accumulation window
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, inputs)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    if level == "token":  # per token; at sequence level TRL counts clipped completions instead
        assert logged["clip_ratio/low_mean"] == pytest.approx(low, abs=1e-6)
        assert logged["clip_ratio/high_mean"] == pytest.approx(high, abs=1e-6)
    assert logged["kl"] == pytest.approx(kl, rel=1e-5)
