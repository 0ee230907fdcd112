"""Is the export the model? The written files are read back the way their users read them and compared with the
model they were made from, on the same inputs:

- logits on fixed prompts (the probe questions, rendered by the chat template): the largest absolute difference, and
  whether the exported tokenizer encodes those prompts to the same ids;
- perplexity on held-out rows (rows the model did not train on; by default the embedded model's 200 held-out
  additions and the concise_heldout pairs, thinned), its ratio to the source model's, against the type's bound;
- the greedy answers (temperature 0) to the probe questions, the demo's three, from both models.

A broken export fails: non-finite logits, a perplexity ratio beyond the bound, or answers that loop or run to the
token limit where the source model's do not (`Broken`, raised before anything is published).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from tunewise.errors import UserError

PROBES = ("你是谁？", "Who are you?", "12+34=?")  # scripts/demo.sh asks these
PROBE_TOKENS = 64
ADDITION_ROWS = 40  # of the 200 held-out additions, every fifth
CONCISE_ROWS = 22  # of the 44 concise_heldout pairs, every other


class Broken(UserError):
    """The export was written but does not compute what the model does; nothing is published."""


@dataclass
class Side:
    """One model under comparison: how it is named in export.json, the model and its tokenizer."""

    label: str
    model: object
    tokenizer: object


def heldout_conversations(specs: list[str] | None = None):
    """--dataset's conversations, else the built-in held-out rows (never in the embedded model's training)."""
    from tunewise.data.formats import Conversation, load_conversations
    from tunewise.data.preference import load_preferences
    from tunewise.evaluate.skills import addition_answer, addition_prompt, heldout_addition_pairs

    if specs:
        return load_conversations(specs)
    pairs = heldout_addition_pairs()[::len(heldout_addition_pairs()) // ADDITION_ROWS]
    convs = [Conversation([{"role": "user", "content": addition_prompt(a, b, i)},
                           {"role": "assistant", "content": addition_answer(a, b)}], f"heldout addition {a}+{b}")
             for i, (a, b) in enumerate(pairs)]
    for pref in load_preferences(["concise_heldout"])[::44 // CONCISE_ROWS]:
        convs.append(Conversation(pref.messages, pref.origin))
    return convs


def _probe_conversations() -> list[list[dict]]:
    return [[{"role": "user", "content": q}] for q in PROBES]


def _logits(side: Side, prompts: list[str]):
    import torch

    out = []
    for text in prompts:
        ids = side.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out.append((ids[0].tolist(), side.model(input_ids=ids).logits[0].float()))
    return out


def logits_check(source: Side, export: Side, system: str | None) -> dict:
    """Largest |logit difference| over every position of the rendered probe prompts; the ids must agree."""
    import torch

    from tunewise.data.template import render

    prompts = [render(source.tokenizer, conv, system) for conv in _probe_conversations()]
    ref, got = _logits(source, prompts), _logits(export, prompts)
    ids_equal = all(a[0] == b[0] for a, b in zip(ref, got))
    finite = all(bool(torch.isfinite(g[1]).all()) for g in got)
    diff = max(float((a[1] - b[1]).abs().max()) for a, b in zip(ref, got)) if ids_equal else None
    scale = max(float(a[1].abs().max()) for a in ref)
    return {"prompts": len(prompts), "positions": sum(len(a[0]) for a in ref), "token_ids_equal": ids_equal,
            "finite": finite, "max_abs_diff": diff, "source_max_abs_logit": scale,
            "argmax_agreement": (sum(int((a[1].argmax(-1) == b[1].argmax(-1)).sum()) for a, b in zip(ref, got))
                                 / sum(len(a[0]) for a in ref)) if ids_equal else None}


def perplexity(side: Side, conversations, system: str | None, max_length: int = 512) -> dict:
    from tunewise.data.encode import encode_dataset
    from tunewise.evaluate.loss import dataset_loss

    rows, _ = encode_dataset(side.tokenizer, conversations, system, max_length)
    return dataset_loss(side.model, side.tokenizer, rows)


def probe_answers(side: Side, system: str | None):
    from tunewise.models.generate import greedy_generations

    return greedy_generations(side.model, side.tokenizer, _probe_conversations(), PROBE_TOKENS, system)


def _degenerate(reply) -> str | None:
    from tunewise.evaluate.repetition import repeated_ngram

    if (gram := repeated_ngram(reply.text)) is not None:
        return f"repeats {gram!r}"
    return "runs to the token limit" if reply.finish_reason == "length" else None


def compare(source: Side, export: Side, system: str | None, bound: float, conversations) -> dict:
    """Every check of `export` against `source`; raises Broken with the reason when the export is broken."""
    logits = logits_check(source, export, system)
    ppl_source = perplexity(source, conversations, system)
    ppl_export = perplexity(export, conversations, system)
    ratio = (ppl_export["perplexity"] / ppl_source["perplexity"]
             if ppl_source["perplexity"] and ppl_export["perplexity"] is not None else None)
    answers = []
    for question, a, b in zip(PROBES, probe_answers(source, system), probe_answers(export, system)):
        answers.append({"question": question, source.label: a.text, export.label: b.text, "same": a.text == b.text,
                        "degenerate": _degenerate(b) if not _degenerate(a) else None})
    checks = {
        "logits": logits,
        "perplexity": {"rows": len(conversations), "tokens": ppl_source["loss_tokens"],
                       source.label: ppl_source["perplexity"], export.label: ppl_export["perplexity"],
                       "ratio": ratio, "bound": bound},
        "answers": answers,
    }
    problems = []
    if not logits["token_ids_equal"]:
        problems.append("the exported tokenizer encodes the probe prompts to other token ids")
    if not logits["finite"] or ppl_export["perplexity"] is None or not math.isfinite(ppl_export["loss"]):
        problems.append("its logits are not finite (NaN or inf)")
    elif ratio is None or ratio > bound:
        problems.append(f"its held-out perplexity is {ppl_export['perplexity']:.4g} against the source model's "
                        f"{ppl_source['perplexity']:.4g} (ratio {ratio:.4f} > bound {bound})")
    problems += [f"its answer to {a['question']!r} {a['degenerate']} ({a[export.label][:60]!r}) where the source "
                 "model's does not" for a in answers if a["degenerate"]]
    if problems:
        raise Broken(f"the export is broken, so nothing was written: {'; '.join(problems)}.")
    return checks
