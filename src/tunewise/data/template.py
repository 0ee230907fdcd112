"""The one place a conversation becomes chat-template text or token ids: training rows, inference prompts, served
prompts, evaluation prompts and preference pairs all render here, so a system prompt is added the same way
everywhere and a template change reaches every command at once.
"""
from __future__ import annotations


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """`messages` with `system` as their first message, unless they already start with one (theirs wins)."""
    if system and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system}] + messages
    return messages


def render(tokenizer, messages: list[dict], system: str | None = None, generation_prompt: bool = True) -> str:
    """The chat-template text of `messages` (with `system` added), ending in the assistant header when
    `generation_prompt`; no messages render as ""."""
    messages = with_system(messages, system)
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def prompt_ids(tokenizer, messages: list[dict], system: str | None = None) -> list[int]:
    """The token ids a reply is generated after: the rendered conversation and the assistant header."""
    return tokenizer(render(tokenizer, messages, system), add_special_tokens=False)["input_ids"]


def template_ids(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    """Token ids as TRL's DPOTrainer makes them (the template tokenizes, special tokens included), so the lengths
    and log-probabilities measured here are those it trains on."""
    return tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                         return_dict=True)["input_ids"]
