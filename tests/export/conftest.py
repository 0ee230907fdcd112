import pytest


@pytest.fixture(scope="session")
def lora_checkpoint(tmp_path_factory):
    """A peft LoRA adapter on tunewise-tiny (all linear layers, rank 4) whose weights move the model: B is drawn at
    random rather than zero, then scaled by 0.05, so the adapter changes the logits (by up to 0.4 on the probe
    prompts). Saved alone, as a peft adapter made elsewhere is: its adapter_config.json names the base."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunewise.models.load import load_model, resolve_model

    torch.manual_seed(0)
    model = load_model(resolve_model("tunewise-tiny"), "float32")
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.05)
    out = tmp_path_factory.mktemp("lora") / "checkpoint-1"
    peft_model.save_pretrained(out)
    import json

    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "tunewise-tiny"
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out
