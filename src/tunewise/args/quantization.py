"""The quantization flags of a training run (QLoRA): the base model's weights held in bitsandbytes' 4 or 8 bits
while LoRA adapters train on top, under ms-swift's names (--quant_method, --quant_bits, --bnb_4bit_*).

What cannot go with them is refused here, before anything is loaded or written: training every weight (quantized
weights have no gradient), DeepSpeed ZeRO-3 and FSDP (they shard the weights that bitsandbytes packs). A DeepSpeed
JSON's stage and whether bitsandbytes runs on this machine are the plan's to check (tunewise.plan.resolve)."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import flag_field, not_one_of

QUANT_METHODS = ("bnb",)  # tunewise.models.quantization.QUANT_METHODS (args import nothing of models)
QUANT_BITS = (4, 8)
BNB_4BIT_QUANT_TYPES = ("nf4", "fp4")
BNB_COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
ZERO3_PRESETS = ("zero3", "zero3_offload")


def bits_problems(bits: int | None) -> list[str]:
    return [] if bits is None or bits in QUANT_BITS else [f"--quant_bits {bits}: expected one of 4, 8."]


@dataclass(frozen=True)
class QuantizationArgs:
    quant_method: str | None = flag_field(None, "how --quant_bits quantizes the base model: bnb (bitsandbytes; the "
                                                "default when --quant_bits is given)")
    quant_bits: int | None = flag_field(None, "QLoRA: load the base model's linear layers in 4 or 8 bits "
                                              "(bitsandbytes) and train LoRA adapters on top (--train_type lora)")
    bnb_4bit_quant_type: str = flag_field("nf4", "4-bit data type: nf4 (QLoRA's NormalFloat) | fp4")
    bnb_4bit_use_double_quant: bool = flag_field(True, "quantize the 4-bit blocks' scales too (saves ~0.4 bit a weight)")
    bnb_4bit_compute_dtype: str | None = flag_field(None, "what 4-bit layers compute in: float32 | bfloat16 | float16 "
                                                          "(default: the run's --torch_dtype as the plan resolves it)")

    def quantization_problems(self) -> list[str]:
        """The quantization flags' problems, and those they make with --train_type, --deepspeed and --fsdp."""
        problems = not_one_of(self, {"quant_method": QUANT_METHODS, "bnb_4bit_quant_type": BNB_4BIT_QUANT_TYPES,
                                     "bnb_4bit_compute_dtype": BNB_COMPUTE_DTYPES}) + bits_problems(self.quant_bits)
        if self.quant_bits is None:
            if self.quant_method is not None:
                problems.append(f"--quant_method {self.quant_method} quantizes nothing without --quant_bits 4 or 8.")
            return problems
        flag = f"--quant_bits {self.quant_bits}"
        if self.train_type != "lora":
            problems.append(f"{flag} with --train_type {self.train_type}: quantized weights cannot be trained; QLoRA "
                            "trains LoRA adapters on the frozen quantized base (--train_type lora).")
        if self.deepspeed in ZERO3_PRESETS:
            problems.append(f"{flag} with --deepspeed {self.deepspeed}: ZeRO-3 shards the weights that bitsandbytes "
                            "packs; use --deepspeed zero2 or none (a 4-bit base is small enough to hold whole).")
        if self.fsdp:
            problems.append(f"{flag} with --fsdp: FSDP shards the weights that bitsandbytes packs, which tunewise does "
                            "not support; leave --fsdp out (or use --deepspeed zero2).")
        return problems
