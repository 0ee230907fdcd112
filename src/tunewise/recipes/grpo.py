"""`tunewise rlhf --rlhf_type grpo`: GRPO with verifiable rewards, on TRL's GRPOTrainer.

What grpo declares: prompt rows (tunewise.data.prompts) whose other fields (the `solution` above all) reach the
reward functions; the rewards (tunewise.rewards: built-ins, weights, plugin files), checked on the rows and called
once on their own solutions before anything is written; how many completions an epoch trains (the plan counts
them); the policy as sft builds it, its LoRA adapter made by GRPOTrainer (the reference is the policy with the adapter
disabled); and GRPOConfig's own fields.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.args import GrpoArgs
from tunewise.data.prompts import load_prompts, trl_rows
from tunewise.errors import UserError
from tunewise.plan.run import Run
from tunewise.recipes import Recipe, trl_trainer
from tunewise.recipes.sft import start_from_base


@dataclass
class PromptStats:
    """What the plan says of GRPO's rows: prompts, each completed --num_generations times."""
    rows: int
    identity_rows: int = 0

    def summary(self) -> str:
        return f"{self.rows} prompts"


def encode(tokenizer, convs, system: str | None, max_length: int, truncation: str):
    """TRL's conversational prompt rows (TRL renders and tokenizes them itself while it generates)."""
    return trl_rows(convs, system), PromptStats(len(convs))


def rewards(args: GrpoArgs, rows: list[dict] | None = None, tokenizer=None):
    """(reward callables, weights) for GRPOTrainer; with `rows`, their columns are checked and every reward is
    called once on the first rows' own solutions, so that a bad name, column or plugin stops the run here."""
    from tunewise.rewards.builtin import RewardArgs
    from tunewise.rewards.models import reward_model_names
    from tunewise.rewards.registry import reward_functions, try_rewards

    funcs, weights = reward_functions(args.reward_funcs, args.reward_weights, args.external_plugins, rows,
                                      "--dataset " + " ".join(args.dataset),
                                      RewardArgs(max_completion_length=args.max_completion_length),
                                      models=reward_model_names(args.reward_model, args.reward_funcs))
    if rows is not None:
        try_rewards(funcs, rows, tokenizer)
    return funcs, weights


def completions(args: GrpoArgs, rows: list[dict], world_size: int) -> int:
    """Completions one epoch trains, as TRL's RepeatSampler deals them: whole generation rounds of
    per_device_train_batch_size x steps_per_generation x processes completions, --num_generations per prompt (the
    prompts of an unfinished round are left out), each round used --num_iterations times. Checked: a round must hold
    whole groups."""
    round_size = args.generation_batch() * world_size
    if round_size % args.num_generations:
        raise UserError(f"--num_generations {args.num_generations} does not divide the {round_size} completions of a "
                        f"generation round (--per_device_train_batch_size {args.per_device_train_batch_size} x "
                        f"steps per generation {args.generation_batch() // args.per_device_train_batch_size} x "
                        f"{world_size} process(es)); change one of them.")
    prompts_per_round = round_size // args.num_generations
    rounds = len(rows) // prompts_per_round
    if rounds == 0:
        raise UserError(f"--dataset: {len(rows)} prompts do not fill one generation round of {prompts_per_round} "
                        "prompts; give more prompts or a smaller --per_device_train_batch_size.")
    return rounds * round_size * args.num_iterations


def check(run_args: GrpoArgs, rows: list[dict], tokenizer) -> list[str]:
    """The plan's notes on GRPO's rows, after the rewards are checked on them and each --reward_model is proved one
    (before anything is written)."""
    from tunewise.rewards.models import reward_checkpoints, reward_model_names

    rewards(run_args, rows, tokenizer)
    scorers = zip(reward_model_names(run_args.reward_model, run_args.reward_funcs),
                  reward_checkpoints(run_args.reward_model))  # the checkpoint a run folder resolves to now
    names = [*run_args.reward_funcs,
             *(f"{n} (--reward_model {c.adapter or c.base})" for n, c in scorers)]
    notes = [f"grpo: {len(rows)} prompts x {run_args.num_generations} completions of up to "
             f"{run_args.max_completion_length} tokens; rewards {', '.join(names)}"]
    if missing := run_args.vllm_missing():
        notes.append(f"{missing} A run here stops on it; this plan is for a machine that has it.")
    return notes


def parts(run: Run) -> dict:
    """The model and, with LoRA, the new adapter's peft_config: GRPOTrainer wraps the model itself, and its
    reference is the model with the adapter disabled. (Handed a PeftModel with --beta > 0, TRL copies the adapter to
    a frozen "ref" adapter and runs it in every reference pass: for a new adapter the same values as the adapter
    disabled, at the cost of LoRA's compute in each pass and a copy in each checkpoint; benchmarks/grpo_vs_trl.py.)"""
    from transformers import set_seed

    from tunewise.models.load import load_model
    from tunewise.models.lora import lora_config
    from tunewise.models.quantization import quantization_of
    from tunewise.rewards.models import load_reward_models

    args = run.args
    funcs, _ = rewards(args)
    scorers, scorer_tokenizers = load_reward_models(args.reward_model, args.torch_dtype, args.reward_funcs)
    set_seed(args.seed)  # LoRA's A matrices are drawn in GRPOTrainer's __init__, before the Trainer seeds
    # as sft.build_model loads it (--quant_bits: QLoRA's base, made ready for adapters), without the adapter
    model = load_model(run.model_dir, args.torch_dtype, run.device.attn_impl, quantization_of(args),
                       args.gradient_checkpointing)
    return {"model": model, "reward_funcs": [*funcs, *scorers],
            "reward_processing_classes": [None] * len(funcs) + scorer_tokenizers,
            "peft_config": lora_config(args) if args.train_type == "lora" else None}


def config_fields(args: GrpoArgs) -> dict:
    """GRPOConfig's own fields; the shared ones come from the run (tunewise.train.build)."""
    return dict(remove_unused_columns=False,  # the rewards read the rows' other columns
                include_num_input_tokens_seen="no",  # GRPO's inputs are prompts: TRL logs num_tokens itself
                num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                temperature=args.temperature, top_k=max(args.top_k, 0), top_p=args.top_p,
                repetition_penalty=args.repetition_penalty, beta=args.beta, epsilon=args.epsilon, epsilon_high=args.epsilon_high,
                loss_type=args.loss_type, importance_sampling_level=args.importance_sampling_level,
                scale_rewards=args.scale_rewards, steps_per_generation=args.steps_per_generation,
                num_iterations=args.num_iterations, reward_weights=list(args.reward_weights) or None, log_completions=args.log_completions,
                use_vllm=args.use_vllm, vllm_mode=args.vllm_mode,
                vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization,
                vllm_server_host=args.vllm_server_host, vllm_server_port=args.vllm_server_port)


RECIPE = Recipe(
    command="rlhf",
    rlhf_type="grpo",
    args_class=GrpoArgs,
    dataset_hint="--dataset is required: prompts with a solution ({\"messages\": [...], \"solution\": ...} or "
                 "{\"query\", \"response\"} rows), a dataset folder, a Hub id, SPEC#N, or the built-in set additions.",
    load=load_prompts,
    encode=encode,
    start=start_from_base,
    samples=completions,
    check=check,
    models=parts,
    config_fields=config_fields,
    **trl_trainer("GRPO"),
)
