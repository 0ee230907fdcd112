"""The quantization group's checks (QLoRA: --quant_bits on sft, dpo and the rlhf trainers), and ExportArgs' bnb
flags."""
import pytest

from tunewise.args import DpoArgs, ExportArgs, SftArgs
from tunewise.errors import UserError
from tunewise.flags import parse


def test_the_flags_parse_under_ms_swift_names():
    args, sources, _ = parse(SftArgs, ["--quant_bits", "4", "--bnb_4bit_quant_type", "fp4",
                                       "--bnb_4bit_use_double_quant", "false", "--bnb_4bit_compute_dtype", "bfloat16"])
    assert (args.quant_method, args.quant_bits, args.bnb_4bit_quant_type, args.bnb_4bit_use_double_quant,
            args.bnb_4bit_compute_dtype) == (None, 4, "fp4", False, "bfloat16")
    assert sources["quant_bits"] == "flag" and sources["quant_method"] == "default"
    dpo, _, _ = parse(DpoArgs, ["--quant_method", "bnb", "--quant_bits", "8"])
    assert (dpo.quant_method, dpo.quant_bits) == ("bnb", 8)
    assert SftArgs().quant_bits is None  # off by default


def test_help_lists_them_after_the_lora_flags():
    from tunewise.flags import help_text

    text = help_text(SftArgs, "sft")
    assert text.index("--lora_dropout") < text.index("--quant_bits") < text.index("--dataset")


@pytest.mark.parametrize("values, message", [
    ({"quant_bits": 3}, "--quant_bits 3: expected one of 4, 8."),
    ({"quant_bits": 4, "quant_method": "gptq"}, "--quant_method gptq: expected one of bnb."),
    ({"quant_method": "bnb"}, "--quant_method bnb quantizes nothing without --quant_bits 4 or 8."),
    ({"quant_bits": 4, "bnb_4bit_quant_type": "int4"}, "--bnb_4bit_quant_type int4: expected one of nf4, fp4."),
    ({"quant_bits": 4, "bnb_4bit_compute_dtype": "auto"},
     "--bnb_4bit_compute_dtype auto: expected one of float32, bfloat16, float16."),
])
def test_values_out_of_range(values, message):
    with pytest.raises(UserError) as e:
        SftArgs(**values)
    assert str(e.value) == message


@pytest.mark.parametrize("values, words", [
    ({"train_type": "full"}, ["--quant_bits 4 with --train_type full", "--train_type lora"]),
    ({"deepspeed": "zero3"}, ["--quant_bits 4 with --deepspeed zero3", "ZeRO-3", "zero2"]),
    ({"deepspeed": "zero3_offload"}, ["--deepspeed zero3_offload"]),
    ({"fsdp": "full_shard auto_wrap"}, ["--quant_bits 4 with --fsdp"]),
])
def test_combinations_qlora_cannot_run_are_refused(values, words):
    for cls in (SftArgs, DpoArgs):
        with pytest.raises(UserError) as e:
            cls(quant_bits=4, **values)
        assert all(w in str(e.value) for w in words), str(e.value)
    SftArgs(quant_bits=4, deepspeed="zero2")  # ZeRO-2 leaves the weights whole


def test_export_flags_go_together():
    assert ExportArgs(quant_method="bnb", quant_bits=8).quant_bits == 8
    assert ExportArgs().quant_method is None
    with pytest.raises(UserError, match="--quant_method bnb needs --quant_bits 4 or 8"):
        ExportArgs(quant_method="bnb")
    with pytest.raises(UserError, match="--quant_bits is for --quant_method bnb"):
        ExportArgs(quant_bits=4)
    with pytest.raises(UserError, match="--quant_bits 2: --quant_method bnb takes 4 or 8"):
        ExportArgs(quant_method="bnb", quant_bits=2)
