"""The server renders prompts with the template an adapter was trained with: --template by name, or for a base
model without a template the one its adapters saved; an adapter trained with a template that renders otherwise
than the server's is refused instead of answering prompts it never saw."""
import pytest

from base_models import base_model_without_template
from cli_runs import run_cli
from tunewise.data.templates import TEMPLATES
from tunewise.errors import UserError
from tunewise.serve.engine import build_engine
from tunewise.serve.args import ServeArgs
from tunewise.serve.vllm import vllm_chat_template

pytestmark = pytest.mark.slow


def train(model, template, out):
    assert run_cli("sft", "--model", model, "--template", template, "--dataset", "self_cognition#8",
                   "--model_name", "N", "--model_author", "A", "--max_steps", 1, "--save_steps", 1,
                   "--report_to", "none", "--output_dir", out, "--add_version", "false") == 0
    return out / "checkpoint-1"


def test_a_base_without_a_template_is_served_with_its_adapters_template(tmp_path):
    base = str(base_model_without_template(tmp_path / "base"))
    ckpt = train(base, "llama3", tmp_path / "llama3")
    engine = build_engine(ServeArgs(model=base, adapters=[f"n={ckpt}"]))
    try:
        assert engine.tokenizer.chat_template == TEMPLATES["llama3"].jinja
        ids = engine.prompt_ids("n", [{"role": "user", "content": "hi"}])
        assert engine.tokenizer.decode(ids).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
        assert engine.tokenizer.convert_tokens_to_ids("<|eot_id|>") in engine.stop_ids
    finally:
        engine.close()
    named = build_engine(ServeArgs(model=base, template="llama3"))  # no adapter: the template by name
    try:
        assert named.tokenizer.chat_template == TEMPLATES["llama3"].jinja
    finally:
        named.close()
    with pytest.raises(UserError, match="has no chat template"):
        build_engine(ServeArgs(model=base))
    template, _ = vllm_chat_template(ServeArgs(model=base, template="plain", engine="vllm"), base, [])
    assert template == TEMPLATES["plain"].jinja


def test_an_adapter_trained_with_another_template_is_refused(tmp_path):
    ckpt = train("tunewise-tiny", "qwen", tmp_path / "qwen")  # Qwen's default system prompt: other prompts
    with pytest.raises(UserError, match="trained with another chat template"):
        build_engine(ServeArgs(model="tunewise-tiny", adapters=[f"q={ckpt}"]))
    same = train("tunewise-tiny", "chatml", tmp_path / "chatml")  # written otherwise, renders alike: served
    build_engine(ServeArgs(model="tunewise-tiny", adapters=[f"c={same}"])).close()
