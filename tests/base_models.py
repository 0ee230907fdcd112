"""Models the tests build (never downloaded): a base model without a chat template, a one-layer model with a fixed
next-token distribution (losses worked out by hand). Imported as `from base_models import ...`."""
from pathlib import Path

LLAMA3_TOKENS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def base_model_without_template(out: Path) -> Path:
    """The embedded model's weights and vocabulary plus Llama 3's special tokens, and no chat template (as a
    pretrained, not instruction-tuned, checkpoint ships)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.models.load import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("tunewise-tiny"))
    tok.add_special_tokens({"additional_special_tokens": LLAMA3_TOKENS}, replace_extra_special_tokens=False)
    tok.chat_template = None
    tok.bos_token = "<|begin_of_text|>"
    tok.save_pretrained(out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    model = AutoModelForCausalLM.from_pretrained(resolve_model("tunewise-tiny"))
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(out)
    return out


def constant_lm(probs):
    """A 1-layer Qwen2 whose next-token distribution is `probs` at every position: all token embeddings are
    e1, attention and MLP outputs are zero, so the final norm gives 2*e1 (hidden 4, eps 0) and the untied LM head
    turns it into log(probs). probs=None: zero head, uniform distribution."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=4, hidden_size=4, intermediate_size=4, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, rms_norm_eps=0.0, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.model.norm.weight.fill_(1.0)
        if probs is not None:
            model.lm_head.weight[:, 0] = torch.log(torch.tensor(probs)) / 2
    return model
