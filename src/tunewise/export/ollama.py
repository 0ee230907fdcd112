"""An Ollama Modelfile for a GGUF export: FROM the file, the trained chat template as a Go template, the stop
tokens, the sampling defaults and the default system prompt.

The Jinja chat template is not translated statement by statement (Jinja and Go templates differ too much for that);
it is read off its renderings. Rendering probe conversations whose contents are sentinel strings gives the text
around each message (`Turns`): before and after a system, user or assistant message, the generation prompt, and the
system prompt the template writes when a conversation has none. The Go template writes the same pieces around
Ollama's `.System` and `.Messages`, and `Turns.render` (what that Go template computes, in Python) is checked
against the Jinja template on conversations with and without a system prompt, one and several turns, before the
Modelfile is written: a template that is not turn by turn (one that rewrites contents, or renders a turn
differently depending on the others) is refused. tests/export/test_ollama.py renders the emitted Go template with
Go's own text/template and compares it with Jinja's text.

What Ollama does to a conversation before its template sees it (server/routes.go, template/template.go): the
Modelfile's SYSTEM becomes a first system message when the request has none; `.System` joins every system message;
`.Messages` keeps them all (the template below writes only user and assistant turns in the loop) and merges
consecutive messages of one role. So system messages in the middle of a conversation, tool calls and tool results
are not written as the Jinja template writes them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from tunewise.errors import UserError

_S, _U1, _A1, _U2 = "TWSYSTEM7F3A", "TWUSER1C9E", "TWREPLY1B44", "TWUSER2D0D"


@dataclass(frozen=True)
class Turns:
    """The text the chat template writes around each message."""

    system_pre: str
    system_post: str
    user_pre: str
    user_post: str
    assistant_pre: str
    assistant_post: str
    generation: str  # the generation prompt (add_generation_prompt)
    default_system: str | None  # the system prompt the template writes when a conversation has none

    def render(self, system: str, messages: list[dict]) -> str:
        """What the Go template computes from Ollama's .System and .Messages (Python's copy, used to check the
        pieces before anything is written)."""
        out = [self.system_pre + system + self.system_post] if system else []
        for m in messages:
            if m["role"] == "user":
                out.append(self.user_pre + m["content"] + self.user_post)
            elif m["role"] == "assistant":
                out.append(self.assistant_pre + m["content"] + self.assistant_post)
        if not messages or messages[-1]["role"] != "assistant":
            out.append(self.generation)
        return "".join(out)


def _render(tokenizer, messages: list[dict], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _between(text: str, start: str | None, end: str | None, what: str) -> str:
    """The text between two sentinels (the start or the end of `text` for None)."""
    if start and text.count(start) != 1 or end and text.count(end) != 1:
        raise ValueError(f"{what} not rendered once")
    i = text.index(start) + len(start) if start else 0
    j = text.index(end) if end else len(text)
    if j < i:
        raise ValueError(f"{what} out of order")
    return text[i:j]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise ValueError(what)
    return text[len(prefix):]


def _strip_suffix(text: str, suffix: str, what: str) -> str:
    if not text.endswith(suffix):
        raise ValueError(what)
    return text[:len(text) - len(suffix)] if suffix else text


def read_turns(tokenizer) -> Turns:
    """The template's pieces, read off probe renderings (see the module docstring); a UserError when the template
    is not turn by turn."""
    from jinja2 import TemplateError

    user = {"role": "user", "content": _U1}
    reply = {"role": "assistant", "content": _A1}
    system = {"role": "system", "content": _S}
    try:
        u = _render(tokenizer, [user], False)
        generation = _strip_prefix(_render(tokenizer, [user], True), u, "generation prompt is not appended")
        user_post = _between(u, _U1, None, "user turn")
        ua = _render(tokenizer, [user, reply], False)
        assistant_pre = _strip_prefix(_between(ua, _U1, _A1, "reply"), user_post, "text between turns")
        assistant_post = _between(ua, _A1, None, "reply end")
        uau = _render(tokenizer, [user, reply, {"role": "user", "content": _U2}], False)
        user_pre = _strip_prefix(_between(uau, _A1, _U2, "second turn"), assistant_post, "text between turns")
        su = _render(tokenizer, [system, user], False)
        system_pre = _between(su, None, _S, "system message")
        system_post = _strip_suffix(_between(su, _S, _U1, "system message"), user_pre, "text after the system")
        before_user = _between(u, None, _U1, "user turn")
        default = None
        if before_user != user_pre:
            block = _strip_suffix(before_user, user_pre, "text before the first turn")
            default = _strip_suffix(_strip_prefix(block, system_pre, "default system prompt"), system_post,
                                    "default system prompt")
    except (ValueError, TemplateError) as e:
        raise UserError(f"the chat template cannot be written as an Ollama template: its probe renderings are not "
                        f"turn by turn ({e}).") from e
    return Turns(system_pre, system_post, user_pre, user_post, assistant_pre, assistant_post, generation, default)


# Conversations the pieces are checked on: with and without a system prompt, one and several turns, ending with a
# question (generation prompt) or a reply; contents with line breaks, Chinese and template-like braces.
_CHECK_CONVERSATIONS = [
    [{"role": "user", "content": "Who are you?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你是谁？"}],
    [{"role": "user", "content": "12+34=?"}, {"role": "assistant", "content": "12+34=46"},
     {"role": "user", "content": "And 1+1?\nSay it in {{ words }}."}],
    [{"role": "system", "content": "Line one.\nLine two."}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "你好！"}, {"role": "user", "content": "再见"},
     {"role": "assistant", "content": "Bye."}],
    [{"role": "user", "content": "Only a question, then a reply."}, {"role": "assistant", "content": "A reply."}],
]


def ollama_view(messages: list[dict], modelfile_system: str | None) -> tuple[str, list[dict]]:
    """(.System, .Messages) as Ollama hands them to a template for a chat request with `messages`."""
    if modelfile_system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": modelfile_system}] + messages
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    merged: list[dict] = []
    for m in messages:
        if merged and merged[-1]["role"] == m["role"] and m["role"] != "tool":
            merged[-1] = {**merged[-1], "content": merged[-1]["content"] + "\n\n" + m["content"]}
        else:
            merged.append(dict(m))
    return system, merged


def jinja_view(tokenizer, messages: list[dict], system: str | None) -> str:
    """The Jinja template's text for `messages` as tunewise infer renders them (`system` added when there is none),
    with the generation prompt when the last message is not a reply."""
    from tunewise.data.template import with_system

    generation = not messages or messages[-1]["role"] != "assistant"
    return _render(tokenizer, with_system(messages, system), generation)


def check_turns(turns: Turns, tokenizer, system: str | None) -> None:
    for conversation in _CHECK_CONVERSATIONS:
        want = jinja_view(tokenizer, conversation, system)
        got = turns.render(*ollama_view(conversation, system))
        if got != want:
            raise UserError("the chat template cannot be written as an Ollama template: for the conversation "
                            f"{json.dumps(conversation, ensure_ascii=False)[:200]} it writes {want[:160]!r}, the "
                            f"turn-by-turn template {got[:160]!r}.")


def _go_text(text: str) -> str:
    """Literal template text; braces that Go would read as an action go in a string literal."""
    if "{{" not in text and "}}" not in text:
        return text
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"  # a JSON string is a Go string literal


def go_template(turns: Turns) -> str:
    t = _go_text
    return ("{{ if .System }}" + t(turns.system_pre) + "{{ .System }}" + t(turns.system_post) + "{{ end }}"
            '{{ $last := "" }}{{ range .Messages }}'
            '{{ if eq .Role "user" }}' + t(turns.user_pre) + "{{ .Content }}" + t(turns.user_post) +
            '{{ else if eq .Role "assistant" }}' + t(turns.assistant_pre) + "{{ .Content }}" + t(turns.assistant_post)
            + "{{ end }}{{ $last = .Role }}{{ end }}"
            '{{ if ne $last "assistant" }}' + t(turns.generation) + "{{ end }}")


def stop_tokens(turns: Turns, tokenizer, eos_ids: list[int]) -> list[str]:
    """The special tokens that end a reply (after it in the template, and the model's eos ids) or open a turn."""
    special = sorted({str(t) for t in tokenizer.added_tokens_decoder.values()} | set(tokenizer.all_special_tokens),
                     key=len, reverse=True)
    found: list[str] = []
    for piece in (turns.assistant_post, *[tokenizer.convert_ids_to_tokens(i) for i in eos_ids],
                  turns.user_pre, turns.assistant_pre, turns.generation):
        found += [s for s in special if s and s in (piece or "") and s not in found]
    return found


def sampling_parameters(generation_config, max_position_embeddings: int | None) -> list[tuple[str, object]]:
    """Ollama PARAMETERs from the model's generation_config.json: greedy (temperature 0) unless it samples."""
    params: list[tuple[str, object]] = []
    g = generation_config
    if g is None or not getattr(g, "do_sample", False):
        params.append(("temperature", 0))
    else:
        for name, key in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
            if getattr(g, key, None) is not None:
                params.append((name, getattr(g, key)))
    if g is not None and getattr(g, "repetition_penalty", None) not in (None, 1.0):
        params.append(("repeat_penalty", g.repetition_penalty))
    if g is not None and getattr(g, "max_new_tokens", None):
        params.append(("num_predict", g.max_new_tokens))
    if max_position_embeddings and max_position_embeddings < 4096:  # Ollama's default context is longer
        params.append(("num_ctx", max_position_embeddings))
    return params


def _quoted(value: str, where: str) -> str:
    if '"""' in value:
        raise UserError(f"{where} contains '\"\"\"', which a Modelfile cannot quote.")
    return '"""' + value + '"""'


def modelfile(gguf_name: str, tokenizer, system: str | None, generation_config, eos_ids: list[int],
              max_position_embeddings: int | None) -> tuple[str, dict]:
    """The Modelfile's text and what it holds (for export.json). `system`: the run's system prompt, else the
    template's own default; checked against the Jinja template first."""
    turns = read_turns(tokenizer)
    system = system or turns.default_system
    check_turns(turns, tokenizer, system)
    template = go_template(turns)
    stops = stop_tokens(turns, tokenizer, eos_ids)
    params = sampling_parameters(generation_config, max_position_embeddings)
    lines = [f"# Ollama Modelfile written by tunewise export: ollama create NAME -f Modelfile",
             f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(template, 'the chat template')}"]
    if system:
        lines.append(f"SYSTEM {_quoted(system, 'the system prompt')}")
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    lines += [f"PARAMETER {name} {value}" for name, value in params]
    return "\n".join(lines) + "\n", {"template": template, "system": system, "stop": stops,
                                     "parameters": dict(params)}
