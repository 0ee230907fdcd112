"""Command-line arguments: one dataclass per command (sft, dpo, infer, export; eval, serve, webui and sweep keep
theirs beside their commands), ms-swift flag names, composed from groups of flags that each carry their help and
their own checks: model, LoRA, data, optimisation, speed, distributed, evaluation, run directory (sft); those plus
preference (dpo); model and sampling (infer). Each command's class checks its values in __post_init__ (every group's
problems, then those that involve flags of two groups) and reports all problems at once as a UserError;
tunewise.flags reads flags and YAML into them.

The sft, dpo and infer classes are frozen: a run's values change only by building a new, re-validated object
(dataclasses.replace), as tunewise.plan.resolve does with a model's recommended values.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.args.cpo import CPO_LOSS_TYPES, CpoFlags, SimpoFlags
from tunewise.args.data import TRUNCATION, DataArgs
from tunewise.args.distributed import DS_SCHEDULER_MODES, DistributedArgs
from tunewise.args.evaluation import EARLY_STOP_ON, EvaluationArgs
from tunewise.args.grpo import GrpoFlags
from tunewise.args.kto import KtoFlags
from tunewise.args.lora import TRAIN_TYPES, LoraArgs
from tunewise.args.model import ATTN_IMPLS, TEMPLATE_NAMES, TORCH_DTYPES, ModelArgs
from tunewise.args.optimisation import DEFAULT_LEARNING_RATE, GUARD_MODES, NAN_POLICIES, OptimisationArgs
from tunewise.args.orpo import OrpoFlags
from tunewise.args.policy import AdapterStartArgs, PolicyStartArgs
from tunewise.args.preference import LOSS_TYPES, PreferenceArgs
from tunewise.args.quantization import QUANT_BITS, QuantizationArgs
from tunewise.args.rm import RmFlags
from tunewise.args.run_dir import REPORT_TO, RunDirArgs, installed
from tunewise.args.sampling import Sampling
from tunewise.args.speed import SpeedArgs, TrainerLossArgs
from tunewise.errors import raise_problems
from tunewise.flags import flag_field, not_one_of

__all__ = ["SftArgs", "DpoArgs", "GrpoArgs", "KtoArgs", "OrpoArgs", "CpoArgs", "SimpoArgs", "InferArgs", "ExportArgs",
           "Sampling", "ModelArgs", "DataArgs", "LoraArgs", "OptimisationArgs", "SpeedArgs", "TrainerLossArgs",
           "DistributedArgs", "EvaluationArgs", "RunDirArgs", "PreferenceArgs", "PolicyStartArgs", "AdapterStartArgs",
           "GrpoFlags", "KtoFlags", "OrpoFlags", "CpoFlags", "SimpoFlags", "RmArgs", "RmFlags", "installed", "TORCH_DTYPES", "ATTN_IMPLS",
           "TEMPLATE_NAMES", "TRAIN_TYPES", "TRUNCATION", "GUARD_MODES", "NAN_POLICIES", "DEFAULT_LEARNING_RATE",
           "DS_SCHEDULER_MODES", "EARLY_STOP_ON", "REPORT_TO", "LOSS_TYPES", "CPO_LOSS_TYPES",
           "QuantizationArgs", "QUANT_BITS"]


# A dataclass lists its bases' fields from the last base to the first: the groups are written in reverse so that
# the flags (and --help) read model, LoRA, quantization, data, optimisation, speed, distributed, evaluation, run
# directory.
@dataclass(frozen=True)
class SftArgs(RunDirArgs, EvaluationArgs, DistributedArgs, SpeedArgs, OptimisationArgs, DataArgs, QuantizationArgs,
              LoraArgs, ModelArgs):
    """Supervised fine-tuning (`tunewise sft`); `tunewise plan` takes the same flags."""

    def __post_init__(self):
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate",
                               DEFAULT_LEARNING_RATE.get(self.train_type, DEFAULT_LEARNING_RATE["lora"]))
        raise_problems(self.read_system_file() + self.problems())

    def problems(self) -> list[str]:
        """Each group's problems, then those of flags of two groups together."""
        problems = (self.model_problems() + self.lora_problems() + self.quantization_problems() + self.data_problems()
                    + self.optimisation_problems()
                    + self.speed_problems() + self.distributed_problems() + self.evaluation_problems()
                    + self.run_dir_problems())
        if self.packing and not self.padding_free:
            problems.append("--packing true keeps each packed row apart through padding-free batches; it cannot be "
                            "used with --padding_free false.")
        if self.group_by_length and self.padding_free:
            problems.append("--group_by_length true groups rows to save padding; with --padding_free true (the "
                            "default) there is none: give --padding_free false as well.")
        return problems

    def recipe(self) -> str:
        """The key of a built-in model's recommended values for this kind of run (tunewise.json "recommended")."""
        return self.train_type


@dataclass(frozen=True)
class DpoArgs(PreferenceArgs, PolicyStartArgs, TrainerLossArgs, SftArgs):
    """Direct preference optimisation (`tunewise dpo`): the sft flags plus the DPO ones."""


@dataclass(frozen=True)
class GrpoArgs(GrpoFlags, TrainerLossArgs, SftArgs):
    """GRPO with verifiable rewards (`tunewise rlhf --rlhf_type grpo`): the sft flags plus the GRPO ones."""


@dataclass(frozen=True)
class KtoArgs(KtoFlags, PolicyStartArgs, TrainerLossArgs, SftArgs):
    """KTO on unpaired rows (`tunewise rlhf --rlhf_type kto`): the sft flags plus the KTO ones."""


@dataclass(frozen=True)
class OrpoArgs(OrpoFlags, AdapterStartArgs, TrainerLossArgs, SftArgs):
    """ORPO on preference pairs, no reference model (`tunewise rlhf --rlhf_type orpo`): the sft flags plus ORPO's."""


@dataclass(frozen=True)
class CpoArgs(CpoFlags, AdapterStartArgs, TrainerLossArgs, SftArgs):
    """CPO on preference pairs, no reference model (`tunewise rlhf --rlhf_type cpo`): the sft flags plus CPO's."""


@dataclass(frozen=True)
class SimpoArgs(SimpoFlags, AdapterStartArgs, TrainerLossArgs, SftArgs):
    """SimPO on preference pairs, no reference model (`tunewise rlhf --rlhf_type simpo`): the sft flags plus SimPO's."""


@dataclass(frozen=True)
class RmArgs(RmFlags, AdapterStartArgs, TrainerLossArgs, SftArgs):
    """A reward model on preference pairs (`tunewise rlhf --rlhf_type rm`): the sft flags plus the rm ones."""


@dataclass(frozen=True)
class InferArgs(ModelArgs, Sampling):
    """Chat with a base model or a fine-tuned checkpoint (`tunewise infer`)."""

    model: str | None = flag_field(None, "base model; read from the run's args.json when --adapters is given")
    adapters: list[str] = flag_field([], "a LoRA checkpoint (peft) or a full checkpoint directory")
    query: str | None = flag_field(None, "answer this one question and exit; without it an interactive chat starts")
    stream: bool = flag_field(True, "print tokens as they are generated")

    def __post_init__(self):
        raise_problems(self.read_system_file() + self.model_problems() + self.sampling_problems())


@dataclass
class ExportArgs:
    """Export a checkpoint or model: merged Hugging Face directory, GGUF (+ Ollama Modelfile) or quantized (`tunewise export`)."""

    adapters: list[str] = flag_field([], "the LoRA checkpoint to export")
    model: str | None = flag_field(None, "base model; read from the run's args.json when omitted. Alone (no "
                                         "--adapters): the model to write as GGUF")
    merge_lora: bool = flag_field(True, "merge the LoRA weights into the base model")
    output_dir: str | None = flag_field(None, "default: CHECKPOINT-merged (CHECKPOINT-gguf-TYPE) next to the "
                                              "checkpoint")
    torch_dtype: str = flag_field("auto", "dtype of the written weights (merged export)")
    overwrite: bool = flag_field(False, "replace an existing --output_dir (never the checkpoint or run being exported)")
    quant_method: str | None = flag_field(None, "gguf: a GGUF file for llama.cpp / Ollama; bnb: bitsandbytes "
                                                "(--quant_bits); default: the merged model as it is")
    gguf_type: str = flag_field("f16", "f16 | q8_0 | q4_k_m (llama.cpp's types; q4_k_m needs libggml-python)")
    to_ollama: bool = flag_field(False, "also write an Ollama Modelfile beside the GGUF file")
    quant_bits: int | None = flag_field(None, "bits for --quant_method bnb: 4 or 8")
    dataset: list[str] = flag_field([], "held-out conversations for the perplexity check (default: the built-in "
                                        "held-out additions and concise_heldout)", split_commas=True)

    QUANT_METHODS = ("gguf", "bnb")  # not fields (no annotation): the flags' choices
    GGUF_TYPES = ("f16", "q8_0", "q4_k_m")
    # ms-swift's other two, looked into on 2026-12-05 (`pip download` / a `pip install --dry-run` against
    # constraints.txt): why each is refused
    NOT_OFFERED = {
        "gptq": "GPTQ would come from GPTQModel, which PyPI has as source only (C++ kernels compiled at install, no "
                "wheel): its newest release, 7.7.0, needs torch >= 2.14.1 where tunewise pins torch 2.13, and 7.6.0 "
                "would bring eight more packages (torchao, maturin and six small ones) and a compiler step, so it is "
                "not a dependency of tunewise and no GPTQ export could be read back and checked here.",
        "awq": "AWQ would come from AutoAWQ, which its authors have deprecated: its last release, 0.2.9 (source only), "
               "was last tested with torch 2.6 and transformers 4.51 (tunewise runs transformers 5.23), it requires "
               "triton, the compiler of its GPU kernels, and its CPU support is inference through "
               "intel-extension-for-pytorch, so it is not a dependency of tunewise and no AWQ export could be read "
               "back and checked here.",
    }

    def __post_init__(self):
        if self.quant_method in self.NOT_OFFERED:
            raise_problems([f"--quant_method {self.quant_method}: not available in tunewise.",
                            self.NOT_OFFERED[self.quant_method],
                            "For 4 bits use --quant_method gguf --gguf_type q4_k_m (llama.cpp, Ollama) or "
                            "--quant_method bnb --quant_bits 4 (transformers, vLLM); or export the merged model "
                            "(without --quant_method) and quantize that where the library runs."])
        problems = not_one_of(self, {"torch_dtype": TORCH_DTYPES, "quant_method": self.QUANT_METHODS,
                                     "gguf_type": self.GGUF_TYPES})
        if self.to_ollama and self.quant_method != "gguf":
            problems.append("--to_ollama true writes a Modelfile for a GGUF file: add --quant_method gguf "
                            "(--gguf_type f16|q8_0|q4_k_m).")
        if self.quant_method == "bnb" and self.quant_bits is None:
            problems.append("--quant_method bnb needs --quant_bits 4 or 8.")
        elif self.quant_method == "bnb" and self.quant_bits not in (4, 8):
            problems.append(f"--quant_bits {self.quant_bits}: --quant_method bnb takes 4 or 8.")
        if self.quant_bits is not None and self.quant_method != "bnb":
            problems.append("--quant_bits is for --quant_method bnb (a GGUF's bits are --gguf_type).")
        raise_problems(problems)
