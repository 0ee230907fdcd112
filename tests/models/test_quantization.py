"""QLoRA's base model: tunewise.models.load.load_model with a Quantization (bitsandbytes 4 or 8 bits, ready for
adapters), checkpoint.load's trainable adapter on it, and the backend check that says why bitsandbytes cannot run."""
import sys

import pytest
import torch

from tunewise.errors import UserError
from tunewise.models.load import load_model, resolve_model
from tunewise.models.quantization import Quantization, backend_problem, bnb_config, check_backend

MODEL = resolve_model("tunewise-tiny")
IDS = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]])


def linear_classes(model) -> set[str]:
    return {type(m).__name__ for name, m in model.named_modules() if name.endswith(("q_proj", "down_proj"))}


@pytest.mark.parametrize("quant, layer", [(Quantization(4), "Linear4bit"), (Quantization(4, "fp4", False), "Linear4bit"),
                                          (Quantization(8), "Linear8bitLt")])
def test_the_base_loads_quantized_frozen_and_trains_an_adapter_after_an_evaluation(quant, layer):
    """An eval-mode forward before training (the Trainer's evaluation, the rows check) must not break the backward:
    bitsandbytes' CPU repacking of 4-bit weights would (benchmarks/QUANT.md)."""
    from peft import LoraConfig, get_peft_model

    model = load_model(MODEL, "float32", quantization=quant)
    assert linear_classes(model) == {layer}
    assert not any(p.requires_grad for p in model.parameters())
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.eval()
    with torch.no_grad():
        before = model(input_ids=IDS).logits
    model.train()
    loss = model(input_ids=IDS, labels=IDS).loss
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert torch.isfinite(loss) and grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    reference = load_model(MODEL, "float32").eval()
    with torch.no_grad():
        gap = (before - reference(input_ids=IDS).logits).abs().max().item()
    assert 0 < gap < 3  # quantized: close to the float32 model, not equal (measured 0.2 int8, 1.2-1.5 nf4/fp4)


def test_a_trainable_adapter_on_a_quantized_base(tmp_path):
    from peft import PeftModel

    from serve.harness import make_adapter
    from tunewise.models.checkpoint import load, open_checkpoint

    found = open_checkpoint(None, [str(make_adapter(tmp_path))])
    model = load(found, "float32", adapter="trainable", quantization=Quantization(4))
    learning = [n for n, p in model.named_parameters() if p.requires_grad]
    assert isinstance(model, PeftModel) and learning and all("lora_" in n for n in learning)
    assert "Linear4bit" in {type(m).__name__ for m in model.modules()}
    with pytest.raises(ValueError, match="not merged into quantized weights"):
        load(found, "float32", adapter="merged", quantization=Quantization(4))


def test_bnb_config_computes_in_the_weights_dtype_unless_told():
    assert bnb_config(Quantization(4), torch.bfloat16).bnb_4bit_compute_dtype == torch.bfloat16
    config = bnb_config(Quantization(4, "fp4", False, "float16"), torch.float32)
    assert (config.bnb_4bit_compute_dtype, config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant) == \
        (torch.float16, "fp4", False)
    assert bnb_config(Quantization(8), torch.float32).load_in_8bit


def test_bitsandbytes_runs_on_this_cpu():
    assert backend_problem(4, "cpu") is None and backend_problem(8, "cpu") is None


def test_a_missing_bitsandbytes_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what `import bitsandbytes` meets when it is absent
    assert "bitsandbytes package is not installed" in backend_problem(4)
    with pytest.raises(UserError) as e:
        check_backend(4, "cpu", "--quant_bits 4")
    assert str(e.value).startswith("--quant_bits 4: the bitsandbytes package is not installed")
    assert "pip install 'tunewise[quant]'" in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_device_it_cannot_run_on_is_named():
    problem = backend_problem(4, "cuda")
    assert problem.startswith("bitsandbytes") and "cannot run a 4-bit layer on cuda" in problem
