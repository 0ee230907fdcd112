"""The Modelfile's Go template, rendered by Go's own text/template as Ollama executes it, writes what the trained
Jinja chat template writes, for conversations with and without a system prompt, one and several turns."""
import importlib.util
from pathlib import Path

import pytest
from transformers import AutoTokenizer, GenerationConfig

import go_render
from tunewise.data.templates import TEMPLATES
from tunewise.errors import UserError
from tunewise.export.ollama import (go_template, jinja_view, modelfile, ollama_view, read_turns,
                                    sampling_parameters)
from tunewise.models.load import resolve_model

ROOT = Path(__file__).resolve().parents[2]


def qwen25_template() -> str:
    spec = importlib.util.spec_from_file_location("qwen_shape", ROOT / "benchmarks" / "qwen_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.QWEN25_TEMPLATE


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("tunewise-tiny"))


CONVERSATIONS = [
    [{"role": "user", "content": "你是谁？"}],
    [{"role": "system", "content": "You answer in one line."}, {"role": "user", "content": "Who are you?"}],
    [{"role": "user", "content": "12+34=?"}, {"role": "assistant", "content": "12+34=46"},
     {"role": "user", "content": "And 2+2?"}],
    [{"role": "system", "content": "多行\n系统提示"}, {"role": "user", "content": "first"},
     {"role": "assistant", "content": "one"}, {"role": "user", "content": "second {{ .System }}"},
     {"role": "assistant", "content": "two"}, {"role": "user", "content": "third\n\nwith a blank line"}],
    [{"role": "user", "content": "Ends with the reply."}, {"role": "assistant", "content": "Reply."}],
]
TEMPLATE_CASES = {"tunewise-tiny's own": None, **{name: TEMPLATES[name].jinja for name in
                                                   ("chatml", "qwen", "qwen3", "plain")}, "Qwen2.5's": "qwen25"}


@pytest.mark.parametrize("renderer", go_render.renderers())
@pytest.mark.parametrize("case", list(TEMPLATE_CASES))
@pytest.mark.parametrize("run_system", [None, "You are 小黄, made by 魔搭."])
def test_go_template_renders_as_the_jinja_template(tiny_tokenizer, case, renderer, run_system):
    tok = tiny_tokenizer
    template = TEMPLATE_CASES[case]
    tok.chat_template = qwen25_template() if template == "qwen25" else (template or AutoTokenizer.from_pretrained(
        resolve_model("tunewise-tiny")).chat_template)
    text, info = modelfile("m.gguf", tok, run_system, None, [], None)
    system = info["system"]  # the run's system prompt, else the template's own default (qwen, Qwen2.5's)
    assert system == (run_system or ("You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                                     if case in ("qwen", "Qwen2.5's") else None))
    cases = [go_render.values(*ollama_view(conv, system)) for conv in CONVERSATIONS]
    rendered = go_render.render(renderer, info["template"], cases)
    for conv, got in zip(CONVERSATIONS, rendered):
        assert got == jinja_view(tok, conv, system), (case, conv)


def test_the_modelfile_holds_the_file_the_stops_the_sampling_and_the_system_prompt(tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(resolve_model("tunewise-tiny"))
    gen = GenerationConfig.from_pretrained(resolve_model("tunewise-tiny"))  # greedy, eos <|im_end|> <|endoftext|>
    text, info = modelfile("model-q8_0.gguf", tok, "Be brief.", gen, [6141, 6142], 2048)
    lines = text.splitlines()
    assert "FROM ./model-q8_0.gguf" in lines and 'SYSTEM """Be brief."""' in lines
    assert text.count('TEMPLATE """') == 1 and info["template"] in text
    assert info["stop"][:2] == ["<|im_end|>", "<|endoftext|>"] and "<|im_start|>" in info["stop"]
    assert {"PARAMETER temperature 0", "PARAMETER num_predict 256", "PARAMETER num_ctx 2048"} <= set(lines)


def test_sampling_defaults_follow_generation_config():
    sampled = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05,
                               max_new_tokens=512)
    assert sampling_parameters(sampled, 32768) == [("temperature", 0.7), ("top_p", 0.8), ("top_k", 20),
                                                   ("repeat_penalty", 1.05), ("num_predict", 512)]
    assert sampling_parameters(GenerationConfig(), 32768) == [("temperature", 0)]  # greedy unless it samples
    assert sampling_parameters(None, 1024) == [("temperature", 0), ("num_ctx", 1024)]


def test_literal_braces_in_the_template_text_stay_text(tiny_tokenizer):
    tok = AutoTokenizer.from_pretrained(resolve_model("tunewise-tiny"))
    tok.chat_template = ("{%- for m in messages %}{{ '{{' + m['role'] + '}} ' + m['content'] + '<|im_end|>\\n' }}"
                         "{%- endfor %}{%- if add_generation_prompt %}{{ '{{assistant}} ' }}{%- endif %}")
    turns = read_turns(tok)
    assert turns.user_pre == "{{user}} " and '{{ "{{user}} " }}' in go_template(turns)
    conv = CONVERSATIONS[2]
    assert go_render.render("go_template", go_template(turns), [go_render.values(*ollama_view(conv, None))]) == \
        [jinja_view(tok, conv, None)]


@pytest.mark.parametrize("jinja, why", [
    ("{%- for m in messages %}{{ m['role'] + ': ' + m['content'] | upper + '<|im_end|>' }}{%- endfor %}",
     "rewrites contents"),
    ("{%- for m in messages %}{%- if loop.last %}{{ 'LAST ' }}{%- endif %}{{ m['role'] + ': ' + m['content'] + "
     "'<|im_end|>' }}{%- endfor %}{%- if add_generation_prompt %}{{ 'assistant: ' }}{%- endif %}",
     "renders the last turn differently"),
])
def test_a_template_that_is_not_turn_by_turn_is_refused(tiny_tokenizer, jinja, why):
    tok = AutoTokenizer.from_pretrained(resolve_model("tunewise-tiny"))
    tok.chat_template = jinja
    with pytest.raises(UserError, match="cannot be written as an Ollama template"):
        modelfile("m.gguf", tok, None, None, [], None)
