"""Models the tests build (never downloaded): a base model without a chat template. Imported as
`from base_models import ...`."""
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
