"""The GRPO flags of `tunewise rlhf --rlhf_type grpo`, under ms-swift's names and with its defaults: the rewards
(built-in names, weights, plugin files), the generations per prompt and their sampling, and the clipped policy loss
(TRL's GRPOTrainer runs it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tunewise import ranks
from tunewise.args.run_dir import installed
from tunewise.flags import flag_field, not_one_of

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
IMPORTANCE_LEVELS = ("token", "sequence")  # sequence: GSPO
SCALE_REWARDS = ("group", "batch", "none")
VLLM_MODES = ("colocate", "server")


@dataclass(frozen=True)
class GrpoFlags:
    PADS: ClassVar[str] = "GRPO pads the completions it generates"
    reward_funcs: list[str] = flag_field([], "rewards by name: accuracy (the row's solution) | format | repetition | "
                                             "soft_overlong | cosine | a name an --external_plugins file registers",
                                         split_commas=True)
    reward_weights: list[float] = flag_field([], "one weight per --reward_funcs, then one per --reward_model "
                                                 "(default 1 each)", split_commas=True)
    reward_model: list[str] = flag_field([], "reward models (a `tunewise rlhf --rlhf_type rm` checkpoint or run, or "
                                             "a one-output sequence classifier) whose score of prompt + completion "
                                             "is a reward, after the --reward_funcs")
    external_plugins: list[str] = flag_field([], "Python files that register reward functions (ms-swift's orms['name'] "
                                                 "or tunewise.rewards.register)")
    num_generations: int = flag_field(8, "completions sampled per prompt (the group its rewards are compared in)")
    max_completion_length: int = flag_field(512, "tokens a completion may have")
    temperature: float = flag_field(0.9, "sampling temperature of the generations")
    top_k: int = flag_field(-1, "sample among the k likeliest tokens only (-1 or 0: all; 1: the likeliest, so a "
                                "prompt's completions are alike)")
    top_p: float = flag_field(1.0, "nucleus sampling: the likeliest tokens holding this much probability (1: all)")
    repetition_penalty: float = flag_field(1.0, "penalty on tokens already in the prompt or completion (1: none)")
    beta: float = flag_field(0.04, "KL penalty against the reference (0: no reference model is kept)")
    epsilon: float = flag_field(0.2, "clipping range of the policy ratio")
    epsilon_high: float | None = flag_field(None, "upper clipping range (DAPO's clip-higher); default: --epsilon")
    loss_type: str = flag_field("grpo", "grpo | bnpo | dr_grpo | dapo: how token losses are averaged")
    importance_sampling_level: str = flag_field("token", "token | sequence (GSPO)")
    scale_rewards: str = flag_field("group", "group | batch | none: divide advantages by the rewards' std")
    steps_per_generation: int | None = flag_field(None, "optimizer micro-steps each generation round feeds "
                                                        "(default: --gradient_accumulation_steps)")
    num_iterations: int = flag_field(1, "optimisation passes over each generation round (mu)")
    log_completions: bool = flag_field(False, "at each logging step, print the sampled completions with their "
                                               "rewards (TRL's table) and append them to RUN_DIR/completions.jsonl")
    use_vllm: bool = flag_field(False, "generate the completions with vLLM (needs the vllm package and a GPU)")
    vllm_mode: str = flag_field("colocate", "colocate (vLLM inside the training process, on the same GPU) | server "
                                            "(a separate `trl vllm-serve` on other GPUs)")
    vllm_gpu_memory_utilization: float = flag_field(0.3, "colocate: the share of the GPU's memory vLLM takes for "
                                                         "its weights and KV cache (TRL's default 0.3)")
    vllm_server_host: str = flag_field("0.0.0.0", "server: the host of the vLLM server")
    vllm_server_port: int = flag_field(8000, "server: the port of the vLLM server")

    def problems(self) -> list[str]:
        return super().problems() + self.grpo_problems()

    def recipe(self) -> str:
        return f"grpo_{self.train_type}"

    def grpo_problems(self) -> list[str]:
        problems = not_one_of(self, {"loss_type": GRPO_LOSS_TYPES,
                                     "importance_sampling_level": IMPORTANCE_LEVELS, "scale_rewards": SCALE_REWARDS,
                                     "vllm_mode": VLLM_MODES})
        problems += self.vllm_problems()
        if not self.reward_funcs and not self.reward_model:
            problems.append("--reward_funcs: name at least one reward (accuracy, format, repetition, soft_overlong, "
                            "cosine, or one from --external_plugins), or give a --reward_model.")
        rewards = len(self.reward_funcs) + len(self.reward_model)
        if self.reward_weights and len(self.reward_weights) != rewards:
            problems.append(f"--reward_weights has {len(self.reward_weights)} values for {len(self.reward_funcs)} "
                            f"--reward_funcs" + (f" and {len(self.reward_model)} --reward_model"
                                                 if self.reward_model else "") + ".")
        if self.num_generations < 2:
            problems.append(f"--num_generations {self.num_generations}: GRPO compares a prompt's completions with "
                            "each other; give at least 2.")
        for name in ("max_completion_length", "num_iterations"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} {getattr(self, name)}: must be at least 1.")
        evaluates = self.val_dataset or self.split_dataset_ratio > 0
        world = ranks.world_size() if ranks.under_launcher() else self.nproc_per_node * self.nnodes
        if evaluates and (self.per_device_eval_batch_size * world) % self.num_generations:
            problems.append(f"--per_device_eval_batch_size {self.per_device_eval_batch_size} x {world} process(es) "
                            f"must be a multiple of --num_generations {self.num_generations}: GRPO evaluates whole "
                            "groups of completions.")
        if self.temperature <= 0:
            problems.append(f"--temperature {self.temperature}: GRPO samples; give a positive temperature.")
        if self.top_k < -1 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            problems.append(f"--top_k {self.top_k}, --top_p {self.top_p}, --repetition_penalty "
                            f"{self.repetition_penalty}: --top_k must be -1 (all tokens) or more, --top_p in (0, 1] "
                            "and --repetition_penalty positive.")
        if self.beta < 0 or self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high < self.epsilon):
            problems.append("--beta must be >= 0, --epsilon > 0 and --epsilon_high (when given) >= --epsilon.")
        return problems

    def vllm_problems(self) -> list[str]:
        problems = []
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            problems.append(f"--vllm_gpu_memory_utilization {self.vllm_gpu_memory_utilization:g}: a share of the "
                            "GPU's memory, above 0 and at most 1.")
        if not 0 < self.vllm_server_port < 65536:
            problems.append(f"--vllm_server_port {self.vllm_server_port}: a TCP port, 1 to 65535.")
        return problems

    def vllm_missing(self) -> str | None:
        """Why --use_vllm cannot run here (a run stops on it; a plan, made here for a GPU machine, notes it)."""
        if not self.use_vllm:
            return None
        if self.vllm_mode == "server" and not cuda_here():
            # trl/generation/vllm_client.py: init_communicator refuses a device that is not CUDA, and trl vllm-serve
            # starts vLLM with --weight-transfer-config '{"backend": "nccl"}' (trl/scripts/vllm_serve.py)
            return ("--use_vllm true --vllm_mode server: TRL's GRPOTrainer pushes the trained weights to the vLLM "
                    "server after every step over NCCL (VLLMClient.init_communicator needs a CUDA device, and `trl "
                    "vllm-serve` starts vLLM's NCCL weight-transfer engine), and this machine has no CUDA GPU: there "
                    "is no CPU path, and a server that is never synced would keep sampling from the starting weights. "
                    "On CPU leave --use_vllm out: transformers' generate runs the completions (the default, counted "
                    "in the plan's memory); `tunewise serve --engine vllm` serves a finished model with vLLM's CPU "
                    "build.")
        if not installed("vllm"):
            server = (" (in server mode too: TRL's VLLMClient imports it in the training process)"
                      if self.vllm_mode == "server" else "")
            return (f"--use_vllm true: the vllm package is not importable here, and TRL generates with it{server} "
                    "(install vllm on a CUDA machine, or leave --use_vllm out: transformers' generate then runs the "
                    "completions, slower, and the plan counts its KV cache).")
        return None

    def generation_batch(self) -> int:
        """Completions per generation round on one process (TRL's per-device generation batch)."""
        return self.per_device_train_batch_size * (self.steps_per_generation or self.gradient_accumulation_steps)


def cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()
