"""Command-line arguments: one dataclass per command (sft, dpo, infer, export; eval, serve, webui and sweep keep
theirs beside their commands), ms-swift flag names. Each class checks its values in __post_init__ and reports all
problems at once as a UserError; tunewise.flags reads flags and YAML into them.

The sft, dpo and infer classes are frozen: a run's values change only by building a new, re-validated object
(dataclasses.replace), as tunewise.plan.resolve does with a model's recommended values.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from tunewise.errors import UserError
from tunewise.flags import below_minimum, flag_field, not_one_of

TRAIN_TYPES = ("lora", "full")
TRUNCATION = ("delete", "left", "right")
GUARD_MODES = ("error", "warn", "off")
DS_SCHEDULER_MODES = ("flags", "keep")
EARLY_STOP_ON = ("eval_loss", "retention")
DEFAULT_LEARNING_RATE = {"lora": 1e-4, "full": 1e-5}
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
TEMPLATE_NAMES = ("chatml", "qwen", "qwen3", "llama3", "plain")  # tunewise.data.templates.TEMPLATES
REPORT_TO = ("tensorboard", "wandb", "swanlab", "none")
NAN_POLICIES = ("stop", "skip")


def installed(package: str) -> bool:
    """`package` can be imported (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec(package) is not None


@dataclass(frozen=True)
class ModelArgs:
    model: str = flag_field("tunewise-tiny", "base model: a local HF directory, a hub id, or the built-in tunewise-tiny")
    torch_dtype: str = flag_field("auto", "auto | float32 | bfloat16 | float16 (auto: bfloat16 on a GPU that computes "
                                          "it, float32 on a CPU; see the plan)")
    attn_impl: str | None = flag_field(None, "attention implementation: sdpa | eager | flash_attention_2 | flash_attention_3 | "
                                             "flex_attention (default: chosen per device for packed batches, see the plan)")
    system: str | None = flag_field(None, "system prompt for rows (and chats) that have none")
    template: str | None = flag_field(None, "chat template: " + " | ".join(TEMPLATE_NAMES) + " (default: the "
                                            "tokenizer's own; needed for a base model that has none)")

    def model_problems(self) -> list[str]:
        """The problems of the model flags, found before anything is loaded or written."""
        return not_one_of(self, {"torch_dtype": TORCH_DTYPES, "attn_impl": ATTN_IMPLS, "template": TEMPLATE_NAMES})

    def __post_init__(self):
        if problems := self.model_problems():
            raise UserError(" ".join(problems))


@dataclass(frozen=True)
class SftArgs(ModelArgs):
    """Supervised fine-tuning (`tunewise sft`); `tunewise plan` takes the same flags."""

    train_type: str = flag_field("lora", "lora | full", aliases=("tuner_type",))
    dataset: list[str] = flag_field([], "files (.jsonl/.json/.csv/.parquet), dataset folders, Hub ids (owner/name), SPEC#N to sample N rows, or built-in sets (self_cognition)", split_commas=True)
    val_dataset: list[str] = flag_field([], "validation data, same forms as --dataset", split_commas=True)
    split_dataset_ratio: float = flag_field(0.0, "fraction of --dataset held out for validation when --val_dataset is not given")
    model_name: list[str] = flag_field([], "new model name for {{NAME}}: one value, or Chinese then English")
    model_author: list[str] = flag_field([], "new author for {{AUTHOR}}: one value, or Chinese then English")
    num_train_epochs: float = flag_field(3.0, "training epochs")
    max_steps: int = flag_field(-1, "optimizer steps; overrides --num_train_epochs when > 0")
    learning_rate: float | None = flag_field(None, "peak learning rate (default: lora 1e-4, full 1e-5, as ms-swift; the built-in "
                                           "model recommends its own)")
    lr_scheduler_type: str = flag_field("cosine", "linear | cosine | cosine_with_min_lr | constant | constant_with_warmup | warmup_stable_decay")
    lr_scheduler_kwargs: str | None = flag_field(None, 'JSON object of scheduler options, e.g. {"min_lr_rate": 0.1}')
    warmup_ratio: float | None = flag_field(None, "warm-up as a fraction of the optimizer steps (default 0.05)")
    warmup_steps: int | None = flag_field(None, "warm-up in optimizer steps; give this or --warmup_ratio")
    per_device_train_batch_size: int = flag_field(1, "samples per device per forward pass")
    per_device_eval_batch_size: int = flag_field(1, "samples per device per evaluation pass")
    gradient_accumulation_steps: int = flag_field(16, "forward passes per optimizer step")
    weight_decay: float = flag_field(0.1, "AdamW weight decay")
    max_grad_norm: float = flag_field(1.0, "gradient clipping norm")
    lora_rank: int = flag_field(8, "LoRA rank r")
    lora_alpha: int = flag_field(32, "LoRA alpha")
    lora_dropout: float = flag_field(0.05, "LoRA dropout")
    target_modules: list[str] = flag_field(["all-linear"], "modules that get LoRA: all-linear or names (q_proj,v_proj,...)", split_commas=True)
    max_length: int = flag_field(2048, "longest tokenized conversation")
    truncation_strategy: str = flag_field("delete", "a row longer than --max_length is: delete | left | right (truncated)")
    gradient_checkpointing: bool = flag_field(False, "recompute activations in the backward pass to save memory")
    padding_free: bool = flag_field(True, "concatenate a batch's rows into one sequence whose position_ids restart per "
                                          "row (attention stays inside each row; checked on the model before training) "
                                          "instead of padding them: the same loss, no compute spent on padding")
    packing: bool = flag_field(False, "group rows into sequences of up to --max_length tokens (each row keeps its own "
                                      "positions and attention): every sample about the same size; needs --padding_free")
    group_by_length: bool = flag_field(False, "batches of rows of similar length (less padding with --padding_free false)")
    chunked_loss: bool = flag_field(True, "the output layer and cross-entropy only at the trained positions, a chunk "
                                          "at a time, so the whole batch's vocabulary-wide logits never exist; false: "
                                          "the model's own loss over every position")
    use_liger_kernel: bool | None = flag_field(None, "Liger's fused Triton kernels, fused linear cross-entropy included "
                                                      "(CUDA; pip install 'tunewise[gpu]'); replaces --chunked_loss "
                                                      "(default: on for a CUDA run when liger-kernel is installed)")
    torch_compile: bool = flag_field(False, "compile the model with torch.compile (slow first steps)")
    deepspeed: str | None = flag_field(None, "DeepSpeed ZeRO: zero2 | zero3 | zero3_offload (built in) or a DeepSpeed JSON file")
    deepspeed_scheduler: str = flag_field("flags", "a 'scheduler' block in the DeepSpeed JSON: flags (removed with a warning; "
                                           "the flags decide) | keep (the JSON's scheduler is used and planned)")
    fsdp: str | None = flag_field(None, "PyTorch FSDP2 over the processes: option words as transformers spells them, "
                                   "'full_shard auto_wrap' (ZeRO-3-like) | 'shard_grad_op auto_wrap' (ZeRO-2-like), "
                                   "optionally with offload; ms-swift's preset fsdp2; or an ms-swift FSDP JSON file "
                                   "(a bare --fsdp: full_shard auto_wrap, as transformers)", const="full_shard auto_wrap")
    fsdp_config: str | None = flag_field(None, "transformers' fsdp_config for --fsdp: a JSON file or an inline JSON object "
                                          '(e.g. \'{"transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"]}\')')
    eval_steps: int = flag_field(50, "evaluate every N optimizer steps (when there is validation data)")
    save_steps: int = flag_field(50, "save a checkpoint every N optimizer steps")
    save_total_limit: int | None = flag_field(2, "checkpoints kept; the best (lowest eval loss) and the last are always kept")
    logging_steps: int = flag_field(5, "log every N optimizer steps")
    early_stop_patience: int | None = flag_field(None, "stop after K evaluations without a lower eval loss (with --early_stop_on "
                                               "retention: after K probes in a row past the threshold, default 2)")
    retention_eval_steps: int = flag_field(0, "every N optimizer steps (and before the first) score general-skill and identity "
                                      "probes, log them and plot them with the loss (0: off)")
    retention_dataset: list[str] = flag_field([], "general-skill probes for the retention watch: {query, response} rows, right "
                                          "when the reply contains the response (default for the built-in model: 50 "
                                          "of its held-out additions)", split_commas=True)
    retention_threshold: float = flag_field(0.05, "warn (or stop, see --early_stop_on) when the general-skill probes fall "
                                          "more than this below their score at the start")
    retention_max_new_tokens: int = flag_field(64, "longest reply to a --retention_dataset probe")
    early_stop_on: str = flag_field("eval_loss", "eval_loss (with --early_stop_patience) | retention: stop when the "
                                         "retention watch sees the general skill stay past --retention_threshold "
                                         "for --early_stop_patience probes (default 2), keeping as best the "
                                         "checkpoint with the highest identity + retention")
    output_dir: str = flag_field("output", "runs are written to OUTPUT_DIR/vN-YYYYMMDD-HHMMSS")
    add_version: bool = flag_field(True, "create a versioned sub-directory vN-... under --output_dir")
    overwrite: bool = flag_field(False, "write into an --output_dir that already holds files: with --add_version false "
                                        "what is there is deleted first; plan replaces its plan files among others")
    resume_from_checkpoint: str | None = flag_field(None, "a checkpoint directory, or 'latest' (the newest in --output_dir)")
    seed: int = flag_field(42, "random seed")
    dataloader_num_workers: int = flag_field(0, "data loader worker processes")
    report_to: list[str] = flag_field(["tensorboard"], "tensorboard | wandb | swanlab | none (wandb and swanlab log offline into the run directory without a login)", split_commas=True)
    nproc_per_node: int = flag_field(1, "processes on this machine (data parallel; launched with torchrun)")
    nnodes: int = flag_field(1, "machines taking part (torchrun --nnodes)")
    node_rank: int = flag_field(0, "this machine's rank among --nnodes (torchrun --node_rank)")
    master_addr: str = flag_field("127.0.0.1", "address of the rank-0 machine (torchrun --master_addr)")
    master_port: int = flag_field(29500, "port of the rank-0 machine (torchrun --master_port)")
    gpu_memory: str | None = flag_field(None, "GPU memory per device for the plan's memory estimate, e.g. 24GiB or 80GB (default: the visible GPU's)")
    local_rank: int = flag_field(-1, "set by the deepspeed launcher (torchrun uses the LOCAL_RANK variable); not for users")
    schedule_guard: str = flag_field("error", "when the optimizer's LR leaves the plan: error (stop) | warn | off")
    nan_policy: str = flag_field("stop", "a non-finite loss or gradient: stop (an error naming the step; the last "
                                         "finite checkpoint is kept) | skip (that optimizer step is skipped; 10 in a "
                                         "row stop the run)")

    def __post_init__(self):
        problems = self.model_problems()
        unknown = [r for r in self.report_to if r not in REPORT_TO]
        if unknown:
            problems.append(f"--report_to {','.join(unknown)}: expected {', '.join(REPORT_TO)} (logging.jsonl and "
                            "the plots are always written).")
        problems += [f"--report_to {name}: the {name} package is not installed; pip install {name} (it then logs "
                     "offline into the run directory unless you have logged in), or leave it out."
                     for name in ("wandb", "swanlab") if name in self.report_to and not installed(name)]
        if self.learning_rate is None:  # every weight moves in full fine-tuning: ten times below LoRA
            object.__setattr__(self, "learning_rate",
                               DEFAULT_LEARNING_RATE.get(self.train_type, DEFAULT_LEARNING_RATE["lora"]))
        problems += not_one_of(self, {"train_type": TRAIN_TYPES, "truncation_strategy": TRUNCATION,
                                      "schedule_guard": GUARD_MODES, "deepspeed_scheduler": DS_SCHEDULER_MODES,
                                      "early_stop_on": EARLY_STOP_ON, "nan_policy": NAN_POLICIES})
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            problems.append("--warmup_ratio and --warmup_steps are both set; give one.")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            problems.append(f"--warmup_ratio {self.warmup_ratio}: must be in [0, 1).")
        if not 0 <= self.split_dataset_ratio < 1:
            problems.append(f"--split_dataset_ratio {self.split_dataset_ratio}: must be in [0, 1).")
        problems += below_minimum(self, ("nproc_per_node", "nnodes", "per_device_train_batch_size",
                                         "per_device_eval_batch_size", "gradient_accumulation_steps", "lora_rank",
                                         "lora_alpha", "max_length", "eval_steps", "save_steps", "logging_steps",
                                         "retention_max_new_tokens"))
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"--lora_dropout {self.lora_dropout}: must be in [0, 1).")
        if self.learning_rate <= 0:
            problems.append(f"--learning_rate {self.learning_rate}: must be positive.")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            problems.append("--num_train_epochs must be positive (or give --max_steps).")
        for flag in ("model_name", "model_author"):
            if len(getattr(self, flag)) > 2:
                problems.append(f"--{flag} takes one or two values (Chinese, English), got {len(getattr(self, flag))}.")
        if self.lr_scheduler_kwargs:
            try:
                if not isinstance(json.loads(self.lr_scheduler_kwargs), dict):
                    raise ValueError
            except ValueError:
                problems.append(f"--lr_scheduler_kwargs {self.lr_scheduler_kwargs}: expected a JSON object.")
        if self.fsdp_config and not self.fsdp:
            problems.append("--fsdp_config is read only with --fsdp (e.g. --fsdp 'full_shard auto_wrap').")
        if self.fsdp and self.deepspeed:
            problems.append(f"--fsdp {self.fsdp} and --deepspeed {self.deepspeed}: two sharding engines; give one.")
        if self.packing and not self.padding_free:
            problems.append("--packing true keeps each packed row apart through padding-free batches; it cannot be "
                            "used with --padding_free false.")
        if self.group_by_length and self.padding_free:
            problems.append("--group_by_length true groups rows to save padding; with --padding_free true (the "
                            "default) there is none: give --padding_free false as well.")
        if self.early_stop_on == "retention" and self.retention_eval_steps <= 0:
            problems.append("--early_stop_on retention needs --retention_eval_steps N (how often to probe).")
        if self.retention_eval_steps < 0:
            problems.append(f"--retention_eval_steps {self.retention_eval_steps}: must be 0 (off) or more.")
        if not 0 <= self.retention_threshold <= 1:
            problems.append(f"--retention_threshold {self.retention_threshold}: must be in [0, 1] (an accuracy drop).")
        if self.retention_dataset and not self.retention_eval_steps:
            problems.append("--retention_dataset is only read by the retention watch: give --retention_eval_steps N.")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            problems.append(f"--early_stop_patience {self.early_stop_patience}: must be at least 1.")
        if problems:
            raise UserError(" ".join(problems))

    def scheduler_kwargs(self) -> dict:
        return json.loads(self.lr_scheduler_kwargs) if self.lr_scheduler_kwargs else {}

    def recipe(self) -> str:
        """The key of a built-in model's recommended values for this kind of run (tunewise.json "recommended")."""
        return self.train_type


# TRL 1.16 DPOConfig.loss_type values
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass(frozen=True)
class DpoArgs(SftArgs):
    """Direct preference optimisation (`tunewise dpo`): the sft flags plus the DPO ones."""

    beta: float = flag_field(0.1, "how far the policy may move from the reference (higher: closer); IPO's tau")
    loss_type: list[str] = flag_field(["sigmoid"], "sigmoid | ipo | hinge | robust | exo_pair | nca_pair | bco_pair | sppo_hard"
                                           " | aot | aot_unpaired | apo_zero | apo_down | discopop | sigmoid_norm | "
                                           "sft; several are summed", split_commas=True)
    loss_weights: list[float] = flag_field([], "one weight per --loss_type (default 1 each)", split_commas=True)
    rpo_alpha: float | None = flag_field(None, "RPO: add this times the NLL of the chosen reply (TRL's 'sft' loss) to the loss")
    label_smoothing: float = flag_field(0.0, "probability that a label is flipped (robust; exo_pair needs it > 0)")
    ref_model: str | None = flag_field(None, "reference model; default: the starting policy (LoRA: adapter disabled, no "
                                     "second copy; full: a frozen copy)")
    adapters: list[str] = flag_field([], "start from this SFT checkpoint (LoRA: it keeps training; full: merged first)")
    # TRL's DPOTrainer pads its chosen/rejected pairs and computes their log-probabilities itself
    padding_free: bool = flag_field(False, "sft only: dpo pads its pairs (TRL computes their log-probabilities)")
    chunked_loss: bool = flag_field(False, "sft only: TRL computes the DPO loss (--use_liger_kernel fuses it on CUDA)")
    packing: bool = flag_field(False, "sft only: dpo trains on preference pairs, not packed rows")
    use_liger_kernel: bool | None = flag_field(False, "Liger's fused DPO loss (CUDA; pip install 'tunewise[gpu]')")

    def __post_init__(self):
        problems = [f"--{flag} true: an sft option; dpo pads its preference pairs and TRL computes their "
                    "log-probabilities over every position." for flag in ("padding_free", "chunked_loss", "packing")
                    if getattr(self, flag)]
        try:
            super().__post_init__()
        except UserError as e:
            problems.append(str(e))
        unknown = [t for t in self.loss_type if t not in LOSS_TYPES]
        if unknown or not self.loss_type:
            problems.append(f"--loss_type {','.join(unknown) or '(empty)'}: expected one or more of "
                            f"{', '.join(LOSS_TYPES)}.")
        if self.loss_weights and len(self.loss_weights) != len(self.loss_type):
            problems.append(f"--loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} loss types.")
        if self.beta <= 0:
            problems.append(f"--beta {self.beta}: must be positive.")
        if self.rpo_alpha is not None and self.rpo_alpha < 0:
            problems.append(f"--rpo_alpha {self.rpo_alpha}: must be >= 0.")
        if not 0 <= self.label_smoothing < 0.5:
            problems.append(f"--label_smoothing {self.label_smoothing}: must be in [0, 0.5).")
        if "exo_pair" in self.loss_type and self.label_smoothing == 0:
            problems.append("--loss_type exo_pair needs --label_smoothing > 0 (the EXO paper uses 1e-3).")
        if len(self.adapters) > 1:
            problems.append("--adapters: give one checkpoint to start from.")
        if problems:
            raise UserError(" ".join(problems))

    def recipe(self) -> str:
        return f"dpo_{self.train_type}"  # DPO wants far smaller steps than SFT on the same model

    def losses(self) -> tuple[list[str], list[float]]:
        """TRL's loss_type and loss_weights; --rpo_alpha adds the NLL of the chosen reply (TRL's "sft" loss)."""
        types = list(self.loss_type)
        weights = list(self.loss_weights) or [1.0] * len(types)
        if self.rpo_alpha:
            types.append("sft")
            weights.append(self.rpo_alpha)
        return types, weights


@dataclass(frozen=True)
class Sampling:
    """How a reply is generated: the sampling flags of `tunewise infer`, and the one sampling type the engine, the
    server and the web UI pass around (each fills it from its own inputs)."""

    temperature: float = flag_field(0.0, "0 = greedy")
    top_p: float = flag_field(1.0, "nucleus sampling")
    top_k: int = flag_field(50, "top-k sampling")
    repetition_penalty: float = flag_field(1.0, "> 1 discourages repetition")
    max_new_tokens: int = flag_field(512, "longest reply")
    seed: int | None = flag_field(None, "sampling seed")

    def sampling_problems(self) -> list[str]:
        problems = below_minimum(self, ("max_new_tokens",)) + below_minimum(self, ("top_k",), 0)
        if not self.temperature >= 0:
            problems.append(f"--temperature {self.temperature}: must be 0 (greedy) or more.")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top_p {self.top_p}: must be in (0, 1].")
        if not self.repetition_penalty > 0:
            problems.append(f"--repetition_penalty {self.repetition_penalty}: must be positive.")
        return problems

    @classmethod
    def of(cls, args) -> "Sampling":
        """The sampling fields of `args` (InferArgs or any object that has them)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class InferArgs(ModelArgs, Sampling):
    """Chat with a base model or a fine-tuned checkpoint (`tunewise infer`)."""

    model: str | None = flag_field(None, "base model; read from the run's args.json when --adapters is given")
    adapters: list[str] = flag_field([], "a LoRA checkpoint (peft) or a full checkpoint directory")
    query: str | None = flag_field(None, "answer this one question and exit; without it an interactive chat starts")
    stream: bool = flag_field(True, "print tokens as they are generated")

    def __post_init__(self):
        if problems := self.model_problems() + self.sampling_problems():
            raise UserError(" ".join(problems))


@dataclass
class ExportArgs:
    """Write a checkpoint as a plain Hugging Face model directory (`tunewise export`)."""

    adapters: list[str] = flag_field([], "the LoRA checkpoint to export")
    model: str | None = flag_field(None, "base model; read from the run's args.json when omitted")
    merge_lora: bool = flag_field(True, "merge the LoRA weights into the base model")
    output_dir: str | None = flag_field(None, "default: CHECKPOINT-merged next to the checkpoint")
    torch_dtype: str = flag_field("auto", "dtype of the written weights")
    overwrite: bool = flag_field(False, "replace an existing --output_dir (never the checkpoint or run being exported)")

    def __post_init__(self):
        if problems := not_one_of(self, {"torch_dtype": TORCH_DTYPES}):
            raise UserError(" ".join(problems))


