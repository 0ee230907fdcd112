"""Log-probabilities of the generated tokens (`logprobs` / `top_logprobs` of the chat API, `logprobs` of the legacy
completions API), as the batching worker computes them and as the HTTP side writes them.

What is reported is vLLM's default (`--logprobs-mode raw_logprobs`) and OpenAI's: the log-softmax of the model's raw
logits at each step, before the repetition penalty, temperature, top-k and top-p shape the distribution a token is
drawn from. So a greedy token's logprob is the model's own, whatever the sampling parameters, and the top
alternatives are the model's most likely tokens (sorted best first) even where the sampler would never pick them.

Tokens are named by their text when their bytes are whole UTF-8, else (a byte-level token holding part of a
character) as "bytes:\\xe6\\x88", OpenAI's spelling; `bytes` always carries the token's raw bytes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TOP_LOGPROBS = 20  # OpenAI's chat limit, and vLLM's default --max-logprobs


@dataclass
class TokenLogprob:
    """One generated token: its name and bytes, its logprob, the top alternatives, where its text starts."""

    token: str
    bytes: list[int]
    logprob: float
    top: list[tuple[str, list[int], float]]
    offset: int  # characters of the reply before this token's text


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the printable character each byte is spelled with -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenBytes:
    """Token id -> (name, raw bytes), cached. Byte-level BPE tokenizers (GPT-2, Qwen, Llama 3) spell bytes with
    printable characters; SentencePiece ones have <0xNN> byte tokens and "▁" for a space; anything else is the
    token decoded alone. Worker thread only (it uses the worker's tokenizer)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.byte_level = "ByteLevel" in repr(getattr(backend, "decoder", None))
        self.special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        self.decoder = _byte_decoder()
        self.cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        if token_id not in self.cache:
            raw = self._bytes(token_id)
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                name = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
            self.cache[token_id] = (name, list(raw))
        return self.cache[token_id]

    def _bytes(self, token_id: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if token_id in self.special or piece is None:
            return (piece or self.tokenizer.decode([token_id])).encode("utf-8")
        if self.byte_level and all(c in self.decoder for c in piece):
            return bytes(self.decoder[c] for c in piece)
        if m := re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece):
            return bytes([int(m.group(1), 16)])
        if not self.byte_level and "▁" in piece:
            return piece.replace("▁", " ").encode("utf-8")
        return self.tokenizer.decode([token_id]).encode("utf-8")


def raw_logprobs(logits, rows: list) -> tuple[list[int], object]:
    """(indices of the rows that want logprobs, their log-softmax [R, V]), taken before any penalty changes
    `logits` in place."""
    want = [i for i, r in enumerate(rows) if r.logprobs is not None and not r.finished]
    return want, (logits[want].log_softmax(-1) if want else None)


def record(want: list[int], raw, rows: list, tokens) -> None:
    """Each such row's `step_logprob`: (the sampled token's logprob, the top ids, their logprobs)."""
    import torch

    k = max(rows[i].logprobs for i in want)
    picked = raw[torch.arange(len(want)), tokens[want]].tolist()
    values, ids = raw.topk(k, dim=-1) if k else (raw[:, :0], raw[:, :0].long())
    values, ids = values.tolist(), ids.tolist()
    for j, i in enumerate(want):
        n = rows[i].logprobs
        rows[i].step_logprob = (picked[j], ids[j][:n], values[j][:n])


def entry(r, token: int, offset: int) -> TokenLogprob:
    """The TokenLogprob of the token `r` just sampled (its step_logprob), its text starting at `offset`."""
    logprob, ids, values = r.step_logprob
    r.step_logprob = None
    name, raw = r.vocab(token)
    return TokenLogprob(name, raw, logprob, [(*r.vocab(i), v) for i, v in zip(ids, values)], offset)


# --- as the APIs write them --------------------------------------------------------------------------------------
def chat_content(entries: list[TokenLogprob]) -> list[dict]:
    """`choices[i].logprobs.content` of a chat completion (or of one streamed chunk)."""
    return [{"token": e.token, "logprob": e.logprob, "bytes": e.bytes,
             "top_logprobs": [{"token": t, "logprob": v, "bytes": b} for t, b, v in e.top]} for e in entries]


def legacy(entries: list[TokenLogprob], shift: int = 0) -> dict:
    """`choices[i].logprobs` of a legacy completion: per token its name, logprob, the top alternatives with the
    sampled token among them (so up to logprobs + 1 of them, as OpenAI says), and its text offset (`shift`: the
    characters before the reply, an echoed prompt)."""
    tops = []
    for e in entries:
        top = {t: v for t, _, v in e.top}
        top.setdefault(e.token, e.logprob)
        tops.append(top)
    return {"tokens": [e.token for e in entries], "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": tops, "text_offset": [shift + e.offset for e in entries]}
