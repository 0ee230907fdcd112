"""tunewise.models.checkpoint.load: a checkpoint's base with its adapter attached, trainable, merged or left off
(infer and eval, dpo from an adapter, export and dpo's full training, and the base alone)."""
import pytest
import torch

from serve.harness import make_adapter
from tunewise.models.checkpoint import attach_adapter, load, open_checkpoint

IDS = torch.tensor([[1, 2, 3, 4, 5]])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("run"))


def logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


def test_the_adapter_attached_trainable_merged_or_left_off(adapter):
    from peft import PeftModel

    found = open_checkpoint(None, [str(adapter)])
    attached = load(found, "float32")
    assert isinstance(attached, PeftModel) and not any(p.requires_grad for p in attached.parameters())
    trainable = load(found, "float32", adapter="trainable")
    learning = [name for name, p in trainable.named_parameters() if p.requires_grad]
    assert isinstance(trainable, PeftModel) and learning and all("lora_" in name for name in learning)
    merged = load(found, "float32", adapter="merged")
    assert not isinstance(merged, PeftModel)
    base = load(found, "float32", adapter="none")
    assert not isinstance(base, PeftModel)

    tuned = logits(attached)
    assert not torch.allclose(tuned, logits(base), atol=1e-3)  # the adapter changes the answers
    assert torch.allclose(tuned, logits(trainable), atol=1e-5) and torch.allclose(tuned, logits(merged), atol=1e-4)
    with attached.disable_adapter():
        assert torch.allclose(logits(attached), logits(base), atol=1e-6)
    with pytest.raises(ValueError, match="adapter must be one of"):
        load(found, adapter="frozen")


def test_a_full_checkpoint_is_the_model_in_every_mode():
    from peft import PeftModel

    found = open_checkpoint("tunewise-tiny", [])
    reference = logits(load(found, "float32"))
    for mode in ("attached", "trainable", "merged", "none"):
        model = load(found, "float32", adapter=mode)
        assert not isinstance(model, PeftModel) and torch.equal(logits(model), reference)


def test_adapters_attach_by_name_beside_each_other(adapter, tmp_path):
    """What serve does: one base, several adapters, each under its own name."""
    other = make_adapter(tmp_path / "other", seed=1)
    model = attach_adapter(load(open_checkpoint("tunewise-tiny", []), "float32"), str(adapter), "a")
    model = attach_adapter(model, str(other), "b")
    assert set(model.peft_config) == {"a", "b"}
    model.set_adapter("a")
    first = logits(model)
    model.set_adapter("b")
    assert not torch.allclose(first, logits(model), atol=1e-3)
