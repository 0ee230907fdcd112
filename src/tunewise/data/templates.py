"""`--template NAME` (ms-swift's flag): chat templates for tokenizers that have none (base models) or when asked,
and what any template (ours or the model's own) is checked for before it is trained on.

A template here is a Jinja chat template set on the tokenizer, so every renderer (tunewise.data.template, TRL's
DPOTrainer, transformers' generation) uses it, and it is saved with the tokenizer in every checkpoint: infer,
serve and export read it back from there.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.errors import UserError

_CHATML_TURNS = ("{%- for message in messages %}"
                 "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
                 "{%- endfor %}"
                 "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@dataclass(frozen=True)
class Template:
    jinja: str
    tokens: tuple[str, ...]  # special tokens the template writes, which the vocabulary must hold as single tokens
    about: str


TEMPLATES = {
    "chatml": Template(_CHATML_TURNS, ("<|im_start|>", "<|im_end|>"), "ChatML turns, no default system prompt"),
    "qwen": Template("{%- if not messages or messages[0]['role'] != 'system' %}"
                     "{{- '<|im_start|>system\\n" + QWEN_SYSTEM + "<|im_end|>\\n' }}{%- endif %}" + _CHATML_TURNS,
                     ("<|im_start|>", "<|im_end|>"), "Qwen2/2.5: ChatML with Qwen's default system prompt"),
    "qwen3": Template(
        "{%- for message in messages %}"
        "{%- if message['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if message.get('reasoning_content') %}"
        "{{- '<think>\\n' + message['reasoning_content'].strip() + '\\n</think>\\n\\n' }}{%- endif %}"
        "{{- message['content'] + '<|im_end|>\\n' }}"
        "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
        "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
        "{%- endif %}{%- endif %}",
        ("<|im_start|>", "<|im_end|>"),
        "Qwen3: ChatML; an assistant turn's reasoning_content in <think> (trained with the reply)"),
    "llama3": Template(
        "{{- bos_token or '' }}{%- for message in messages %}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
        " + '<|eot_id|>' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), "Llama 3 headers, <|eot_id|> ends a turn"),
    "plain": Template(
        "{%- for message in messages %}"
        "{%- if message['role'] == 'system' %}{{- message['content'] + '\\n\\n' }}"
        "{%- elif message['role'] == 'user' %}{{- 'Human: ' + message['content'] + '\\nAssistant:' }}"
        "{%- else %}{{- ' ' + message['content'] + eos_token + '\\n' }}{%- endif %}"
        "{%- endfor %}",
        (), "for base models: Human:/Assistant: lines, the tokenizer's eos ends a reply"),
}


def names() -> str:
    return ", ".join(TEMPLATES)


def apply_template(tokenizer, name: str, where: str) -> None:
    """Set template `name` on `tokenizer` (loaded from `where`), after checking the vocabulary can write it."""
    if name not in TEMPLATES:
        raise UserError(f"--template {name}: expected one of {names()}.")
    template = TEMPLATES[name]
    special = set(tokenizer.all_special_tokens) | {str(t) for t in tokenizer.added_tokens_decoder.values()}
    missing = [t for t in template.tokens if t not in special]
    if missing:
        raise UserError(f"--template {name}: the tokenizer of {where} has no special token {', '.join(missing)}, so "
                        "the template's markers would be trained as ordinary text; use a model whose vocabulary has "
                        "them, or --template plain (it needs only an eos token).")
    if name == "plain" and not tokenizer.eos_token:
        raise UserError(f"--template plain: the tokenizer of {where} has no eos token to end a reply with.")
    tokenizer.chat_template = template.jinja


def turn_end(tokenizer) -> str:
    """The special token that ends an assistant turn in this tokenizer's template (<|im_end|>, <|eot_id|>, eos...),
    read off a rendered probe conversation: it is trained with every reply and stops generation."""
    from jinja2 import TemplateError

    probe = "tunewise-probe-reply"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": probe}], tokenize=False)
    except TemplateError as e:
        raise UserError(f"the chat template cannot render a user turn and a reply ({e}); pass --template NAME "
                        f"({names()}).") from e
    after = text[text.rindex(probe) + len(probe):] if probe in text else ""
    special = sorted({str(t) for t in tokenizer.added_tokens_decoder.values()} | set(tokenizer.all_special_tokens),
                     key=len, reverse=True)
    found = next((t for t in special if t and after.lstrip().startswith(t)), None)
    if found is None:
        raise UserError(f"the chat template does not end an assistant reply with a special token (after the reply "
                        f"it writes {after[:40]!r}), so a trained model would not learn to stop; pass --template "
                        f"NAME ({names()}).")
    return found


def drops_system(tokenizer) -> bool:
    """True when the template leaves a system message out of the text (some ignore the role, some refuse it)."""
    from jinja2 import TemplateError

    probe = "tunewise-probe-system"
    try:
        text = tokenizer.apply_chat_template([{"role": "system", "content": probe}, {"role": "user", "content": "hi"}],
                                             tokenize=False, add_generation_prompt=True)
    except TemplateError:  # e.g. "System role not supported"
        return True
    return probe not in text


def renders_alike(tokenizer, other_template: str) -> bool:
    """`other_template` renders probe conversations (with and without a system message, several turns, a
    generation prompt) to the same text as the tokenizer's own: templates written differently may still give a
    model the same prompts."""
    from jinja2 import TemplateError

    turns = [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"}]
    probes = [turns, [{"role": "system", "content": "S"}, *turns]]

    def text(template, probe):
        try:
            return tokenizer.apply_chat_template(probe, chat_template=template, tokenize=False,
                                                 add_generation_prompt=True)
        except TemplateError as e:
            return f"error: {e}"

    return all(text(other_template, probe) == text(None, probe) for probe in probes)
