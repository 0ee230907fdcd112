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
PROBE_TOKENS = 40  # the demo's answers take 12-20 tokens; each step of Qwen's 152k-word head reads its 0.5 GB
ADDITION_ROWS = 25  # of the 200 held-out additions, every eighth
CONCISE_ROWS = 11  # of the 44 concise_heldout pairs, every fourth


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


@dataclass
class Measured:
    """What one model does on the check inputs; `measure` it, then `compare` two."""

    prompt_ids: list  # the probe prompts as this side's tokenizer and chat template encode them
    logits: list  # float32 logits at every position of each probe prompt
    perplexity: dict
    answers: list  # tunewise.models.generate.Reply for each probe question


def measure(side: Side, system: str | None, conversations) -> Measured:
    """Logits on the rendered probe prompts, held-out perplexity and greedy probe answers of one model. Each side
    renders with its own tokenizer's chat template, so an export's template and tokenizer are checked too."""
    import torch

    from tunewise.data.template import render

    ids, logits = [], []
    for conv in _probe_conversations():
        text = render(side.tokenizer, conv, system)
        prompt = side.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits.append(side.model(input_ids=prompt).logits[0].float())
        ids.append(prompt[0].tolist())
    return Measured(ids, logits, perplexity(side, conversations, system), probe_answers(side, system))


def logits_check(ref: Measured, got: Measured) -> dict:
    """Largest |logit difference| over every position of the probe prompts; the token ids must agree."""
    import torch

    ids_equal = ref.prompt_ids == got.prompt_ids
    positions = sum(len(i) for i in ref.prompt_ids)
    pairs = list(zip(ref.logits, got.logits))
    return {"prompts": len(ref.prompt_ids), "positions": positions, "token_ids_equal": ids_equal,
            "finite": all(bool(torch.isfinite(g).all()) for g in got.logits),
            "max_abs_diff": max(float((a - b).abs().max()) for a, b in pairs) if ids_equal else None,
            "source_max_abs_logit": max(float(a.abs().max()) for a in ref.logits),
            "argmax_agreement": sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in pairs) / positions
            if ids_equal else None}


def perplexity(side: Side, conversations, system: str | None, max_length: int = 512) -> dict:
    """Assistant-token perplexity, as tunewise.evaluate.loss.dataset_loss measures it, with the vocabulary projection
    only where a label is (Qwen's 152k-token head over every prompt position would be most of the time)."""
    import torch

    from tunewise.data.encode import IGNORE, encode_dataset

    rows, _ = encode_dataset(side.tokenizer, conversations, system, max_length)
    decoder, head = side.model.get_decoder(), side.model.get_output_embeddings()
    pad = side.tokenizer.pad_token_id or 0
    total, count = 0.0, 0
    for start in range(0, len(rows), 8):
        chunk = rows[start:start + 8]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.tensor([r["input_ids"] + [pad] * (width - len(r["input_ids"])) for r in chunk])
        labels = torch.tensor([r["labels"] + [IGNORE] * (width - len(r["labels"])) for r in chunk])
        mask = (torch.arange(width)[None, :] < torch.tensor([len(r["input_ids"]) for r in chunk])[:, None]).long()
        with torch.no_grad():
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
            keep = labels[:, 1:] != IGNORE
            logits = head(hidden[keep]).float()
        total += torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep], reduction="sum").item()
        count += int(keep.sum())
    loss = total / count if count else float("nan")
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)) if count else None, "loss_tokens": count}


def probe_answers(side: Side, system: str | None):
    from tunewise.models.generate import greedy_generations

    return greedy_generations(side.model, side.tokenizer, _probe_conversations(), PROBE_TOKENS, system)


def _degenerate(reply) -> str | None:
    from tunewise.evaluate.repetition import repeated_ngram

    if (gram := repeated_ngram(reply.text)) is not None:
        return f"repeats {gram!r}"
    return "runs to the token limit" if reply.finish_reason == "length" else None


def compare(source: Side, export: Side, system: str | None, bound: float, conversations,
            source_measured: Measured | None = None) -> dict:
    """Every check of `export` against `source` (measured here unless `source_measured` is given); raises Broken
    with the reason when the export is broken."""
    ref = source_measured or measure(source, system, conversations)
    got = measure(export, system, conversations)
    logits = logits_check(ref, got)
    ppl_source, ppl_export = ref.perplexity, got.perplexity
    ratio = (ppl_export["perplexity"] / ppl_source["perplexity"]
             if ppl_source["perplexity"] and ppl_export["perplexity"] is not None else None)
    answers = []
    for question, a, b in zip(PROBES, ref.answers, got.answers):
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
