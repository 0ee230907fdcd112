"""Hyper-parameter advice, each value with its reason, and the advice and memory estimate a planned run prints.

`advise(num_samples, train_type, ...)` recommends learning rate, epochs, warm-up, LoRA rank and alpha from the data
size, the method and the model size, and warns when chosen values are far from it. Sources: practitioners' findings
for Qwen2.5-7B LoRA on identity data (< 100 samples: lr 1e-4, 8-12 epochs; 100-500: 3-5 epochs with early stopping;
> 500: 2-3 epochs with early stopping; full fine-tuning of large sets lr 1e-5-2e-5; warm-up 0.05-0.1); a built-in
model's own recommended values (tunewise.json) take precedence for that model. Identity rows ({{NAME}}/{{AUTHOR}})
follow the identity rule by their own count, whatever general data is mixed in. The memory estimate is
tunewise.plan.memory's.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.errors import UserError
from tunewise.plan.grpo_memory import GrpoMemory, format_grpo_memory
from tunewise.plan.memory import MemoryEstimate, format_memory

IDENTITY_FEW_ROWS = 200  # identity data up to this many rows follows the 8-12 epoch rule (the guide says ~100)


# ---------------------------------------------------------------------------------------------------------------
# hyper-parameters
@dataclass
class Recommendation:
    name: str
    value: float
    reason: str
    low: float | None = None
    high: float | None = None


@dataclass
class Advice:
    recommendations: dict[str, Recommendation]
    warnings: list[str]

    def values(self) -> dict:
        return {k: r.value for k, r in self.recommendations.items()}


def advise(num_samples: int, train_type: str = "lora", model_parameters: int | None = None,
           recommended: dict | None = None, chosen: dict | None = None, identity_rows: int = 0,
           identity_recipe: dict | None = None) -> Advice:
    """Recommended learning_rate, num_train_epochs, warmup_ratio (and lora_rank, lora_alpha for LoRA) with reasons;
    `recommended`: a built-in model's own values (tunewise.json "recommended"[train_type]), which win; `chosen`:
    the values of a planned run, compared with the advice (warnings). `identity_rows`: how many of the samples are
    identity data (self-cognition rows with {{NAME}}/{{AUTHOR}}): their epoch rule goes by their own count, not
    the mix's; `identity_recipe`: a built-in model's measured identity recipe (tunewise.json "identity")."""
    if num_samples < 1:
        raise UserError("advice needs at least one training sample.")
    recs: dict[str, Recommendation] = {}
    size = f"{num_samples} samples"
    big = model_parameters is not None and model_parameters >= 1e9
    extra_warnings = []
    identity = 0 < identity_rows <= IDENTITY_FEW_ROWS
    recipe_mix = (identity_recipe or {}).get("mix")

    if identity:
        # A new name is learnt from its own rows: the general rows mixed in ride along and do not shorten it.
        mixed = num_samples - identity_rows
        ride = f"; the {mixed} general rows mixed in ride along" if mixed else ""
        if identity_recipe and "num_train_epochs" in identity_recipe:
            value = identity_recipe["num_train_epochs"]
            measured = f": --dataset {recipe_mix}" if recipe_mix else ""
            recs["num_train_epochs"] = Recommendation(
                "num_train_epochs", value, f"{identity_rows} identity rows: the model's measured identity recipe "
                f"(tunewise.json{measured} --num_train_epochs {value:g}){ride}", value, value)
        else:
            recs["num_train_epochs"] = Recommendation(
                "num_train_epochs", 10, f"{identity_rows} identity rows (a few hundred at most): "
                f"8-12 epochs for a new identity to take, 15+ starts parroting{ride}", 8, 12)
        if not mixed:
            mix = f" ({recipe_mix} for this model, measured)" if recipe_mix else ""
            extra_warnings.append(f"identity data alone: the fine-tune costs general skill; mix general data into "
                                  f"--dataset{mix}, as ms-swift's self-cognition recipe mixes alpaca data")
    elif num_samples < 100:
        recs["num_train_epochs"] = Recommendation("num_train_epochs", 10, f"{size} (< 100): 8-12 epochs are needed for "
                                                  "a new identity to take, more starts parroting", 8, 12)
    elif num_samples <= 500:
        recs["num_train_epochs"] = Recommendation("num_train_epochs", 4, f"{size} (100-500): 3-5 epochs, with early "
                                                  "stopping on a validation split", 3, 5)
    else:
        recs["num_train_epochs"] = Recommendation("num_train_epochs", 2, f"{size} (> 500): 2-3 epochs, with early "
                                                  "stopping on a validation split", 2, 3)
    if train_type == "lora":
        recs["learning_rate"] = Recommendation("learning_rate", 1e-4, "LoRA: 1e-4 (Qwen2.5-7B identity fine-tunes)",
                                               5e-5, 2e-4)
    elif num_samples > 500:
        recs["learning_rate"] = Recommendation("learning_rate", 1e-5, f"full fine-tuning, {size} (> 500): 1e-5-2e-5",
                                               1e-5, 2e-5)
    else:
        recs["learning_rate"] = Recommendation("learning_rate", 1e-5, "full fine-tuning: 1e-5 (every weight moves; "
                                               "ten times below LoRA)", 5e-6, 2e-5)
    recs["warmup_ratio"] = Recommendation("warmup_ratio", 0.05, "0.05-0.1 of the steps: enough to settle AdamW's "
                                          "moment estimates", 0.05, 0.1)
    if train_type == "lora":
        rank = 8 if num_samples <= 1000 else 16 if num_samples <= 10000 else 32
        recs["lora_rank"] = Recommendation("lora_rank", rank, f"{size}: rank {rank} holds it "
                                           + ("(identity data needs little capacity)" if rank == 8 else
                                              "(more data, more capacity)"), rank // 2 or 1, rank * 2)
        recs["lora_alpha"] = Recommendation("lora_alpha", 4 * rank, "alpha = 4 x rank (the ms-swift default 8/32): "
                                            "the update scale alpha/r stays 4 whatever the rank", 2 * rank, 8 * rank)
    if big and train_type == "full":
        recs["learning_rate"].reason += f"; {model_parameters / 1e9:.1f} B parameters"
    if recommended:
        for name in ("learning_rate", "warmup_ratio", "lora_rank", "lora_alpha", "num_train_epochs"):
            if name in recommended and (name in recs or name == "num_train_epochs"):
                value = recommended[name]
                recs[name] = Recommendation(name, value, "the model's own recommended value (tunewise.json), "
                                            "measured for it", value, value)
    return Advice(recs, check_choices(recs, chosen or {}, identity_rows if identity else num_samples, identity)
                  + extra_warnings)


def check_choices(recs: dict[str, Recommendation], chosen: dict, num_samples: int, identity: bool = False) -> list[str]:
    """Warnings for chosen values far from the advice (`num_samples`: the identity rows when `identity`)."""
    warnings = []
    lr, rec_lr = chosen.get("learning_rate"), recs.get("learning_rate")
    if lr and rec_lr and (lr >= 5 * rec_lr.value or lr <= rec_lr.value / 5):
        direction = "high: the loss may spike or diverge" if lr > rec_lr.value else "low: it may not learn in time"
        warnings.append(f"learning_rate {lr:g} is {lr / rec_lr.value:.3g}x the advised {rec_lr.value:g}; too "
                        f"{direction}")
    epochs, rec_ep = chosen.get("num_train_epochs"), recs["num_train_epochs"]
    if epochs:
        if (identity or num_samples < 100) and epochs > 15:
            what = f"{num_samples} identity rows" if identity else f"{num_samples} samples (< 100)"
            warnings.append(f"num_train_epochs {epochs:g} on {what}: likely to parrot training answers; 8-12 suffice")
        elif rec_ep.high and epochs > 2 * rec_ep.high:
            warnings.append(f"num_train_epochs {epochs:g} is over twice the advised {rec_ep.low:g}-{rec_ep.high:g}: "
                            "likely to overfit (use early stopping)")
        elif rec_ep.low and epochs < rec_ep.low / 2:
            warnings.append(f"num_train_epochs {epochs:g} is under half the advised {rec_ep.low:g}-{rec_ep.high:g}: "
                            "the new behaviour may not take")
    warmup = chosen.get("warmup_ratio")
    if warmup is not None and warmup > 0.3:
        warnings.append(f"warmup_ratio {warmup:g}: a third or more of the run at a reduced learning rate")
    rank, alpha = chosen.get("lora_rank"), chosen.get("lora_alpha")
    if rank and alpha and not 1 <= alpha / rank <= 8:
        warnings.append(f"lora_alpha/lora_rank = {alpha / rank:g}: the update scale is usually 1-8 (alpha 2-4x rank)")
    return warnings


def format_advice(advice: Advice, chosen: dict | None = None, memory: MemoryEstimate | None = None) -> str:
    chosen = chosen or {}
    lines = ["advice:"]
    for name, rec in advice.recommendations.items():
        now = f" (planned {chosen[name]:g})" if name in chosen and chosen[name] is not None else ""
        lines.append(f"  {name:<17} {rec.value:<8g}{now}  {rec.reason}")
    lines += [f"WARNING: {w}" for w in advice.warnings]
    if isinstance(memory, GrpoMemory):  # generation included: its own block
        lines.append(format_grpo_memory(memory))
    elif memory is not None:
        lines.append(format_memory(memory))
    return "\n".join(lines)


def plan_advice(run) -> str:
    """The advice and the memory estimate for a resolved `tunewise sft`/`dpo`/`plan` run (tunewise.plan.run.Run)."""
    from tunewise.models.load import builtin_meta

    args = run.args
    chosen = {"learning_rate": args.learning_rate, "num_train_epochs": args.num_train_epochs,
              "warmup_ratio": args.warmup_ratio if run.schedule.warmup_steps else 0}  # 0: a default warm-up yielded
    if args.train_type == "lora":
        chosen.update(lora_rank=args.lora_rank, lora_alpha=args.lora_alpha)
    meta = builtin_meta(run.model_dir)
    recommended = meta.get("recommended", {}).get(args.recipe())
    identity_recipe = meta.get("identity", {}).get(args.train_type)
    parameters = run.memory.parameters if run.memory else None
    advice = advise(run.rows, args.train_type, parameters, recommended, chosen, run.identity_rows, identity_recipe)
    if not run.recipe.sft_rules:  # the epoch/lr rules come from identity SFT studies; for DPO and GRPO only the
        # warm-up and the LoRA shape carry over
        advice = Advice({k: v for k, v in advice.recommendations.items()
                         if k not in ("num_train_epochs", "learning_rate")},
                        [w for w in advice.warnings if "num_train_epochs" not in w and "learning_rate" not in w])
    return format_advice(advice, chosen, run.memory)
