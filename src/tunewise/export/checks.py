"""Is the export the model? The written files are read back the way their users read them and compared with the
model they were made from, on the same inputs:

- the tokenizer: the exported one (read back from the files) renders the probe questions with its chat template
  and encodes them and the held-out rows to the same token ids as the source's (`encoding_check`);
- logits on fixed prompts (the probe questions, rendered by the chat template): the largest absolute difference;
- perplexity on held-out rows (rows the model did not train on; by default the embedded model's 200 held-out
  additions and the concise_heldout pairs, thinned), its ratio to the source model's, against the type's bound;
- the greedy answers (temperature 0) to the probe questions, the demo's three, from both models.

Each model is measured on its own (`measure`, which may run in a thread while the export is still being read back);
since the encodings are checked equal, both are measured on the source tokenizer's token ids. A broken export fails:
other token ids, non-finite logits, a perplexity ratio beyond the bound, or answers that loop or run to the token
limit where the source model's do not (`Broken`, raised before anything is published).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from tunewise.errors import UserError

PROBES = ("你是谁？", "Who are you?", "12+34=?")  # scripts/demo.sh asks these
PROBE_TOKENS = 40  # the demo's answers take 12-20 tokens; each step of Qwen's 152k-word head reads its 0.5 GB
ADDITION_ROWS = 25  # of the 200 held-out additions, every eighth
CONCISE_ROWS = 11  # of the 44 concise_heldout pairs, every fourth
MAX_LENGTH = 512


class Broken(UserError):
    """The export was written but does not compute what the model does; nothing is published."""


@dataclass
class Side:
    """One model under comparison: the model and a tokenizer (a thread of its own needs a tokenizer of its own)."""

    model: object
    tokenizer: object


@dataclass
class Measured:
    """What one model does on the check inputs."""

    logits: list  # float32 logits at every position of each rendered probe prompt
    perplexity: dict
    answers: list  # tunewise.models.generate.Reply for each probe question


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


def _probe_ids(tokenizer, system: str | None) -> list[list[int]]:
    from tunewise.data.template import prompt_ids

    return [prompt_ids(tokenizer, conv, system) for conv in _probe_conversations()]


def _rows(tokenizer, conversations, system: str | None) -> list[dict]:
    from tunewise.data.encode import encode_dataset

    return encode_dataset(tokenizer, conversations, system, MAX_LENGTH)[0]


def encoding_check(source_tokenizer, export_tokenizer, system: str | None, conversations) -> dict:
    """The exported tokenizer against the source's: chat template, end-of-turn ids, and the token ids (and loss
    labels) of the probe prompts and held-out rows, each rendered with its own template."""
    from tunewise.models.load import end_of_turn_ids

    probes = _probe_ids(source_tokenizer, system) == _probe_ids(export_tokenizer, system)
    rows = _rows(source_tokenizer, conversations, system)
    same_rows = [(r["input_ids"], r["labels"]) for r in rows] == \
        [(r["input_ids"], r["labels"]) for r in _rows(export_tokenizer, conversations, system)]
    return {"chat_template_equal": source_tokenizer.chat_template == export_tokenizer.chat_template,
            "probe_prompt_ids_equal": probes, "heldout_row_ids_equal": same_rows,
            "end_of_turn_ids_equal": end_of_turn_ids(source_tokenizer) == end_of_turn_ids(export_tokenizer)}


def measure(side: Side, system: str | None, conversations) -> Measured:
    """Logits on the rendered probe prompts, held-out perplexity and greedy probe answers of one model."""
    import torch

    logits = []
    for ids in _probe_ids(side.tokenizer, system):
        with torch.no_grad():
            logits.append(side.model(input_ids=torch.tensor([ids])).logits[0].float())
    return Measured(logits, perplexity(side, conversations, system), probe_answers(side, system))


def logits_check(ref: Measured, got: Measured) -> dict:
    """Largest |logit difference| over every position of the probe prompts."""
    import torch

    pairs = list(zip(ref.logits, got.logits))
    positions = sum(len(a) for a in ref.logits)
    return {"prompts": len(pairs), "positions": positions,
            "finite": all(bool(torch.isfinite(g).all()) for g in got.logits),
            "max_abs_diff": max(float((a - b).abs().max()) for a, b in pairs),
            "source_max_abs_logit": max(float(a.abs().max()) for a in ref.logits),
            "argmax_agreement": sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in pairs) / positions}


def perplexity(side: Side, conversations, system: str | None) -> dict:
    """Assistant-token perplexity, as tunewise.evaluate.loss.dataset_loss measures it, with the vocabulary projection
    only where a label is (Qwen's 152k-token head over every prompt position would be most of the time)."""
    import torch

    from tunewise.data.encode import IGNORE

    rows = _rows(side.tokenizer, conversations, system)
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


def compare(labels: tuple[str, str], ref: Measured, got: Measured, encoding: dict, bound: float,
            rows: int) -> dict:
    """The checks of the export (`got`, labels[1]) against its source (`ref`, labels[0]); raises Broken with the
    reasons when the export is broken."""
    src, dst = labels
    logits = logits_check(ref, got)
    ppl_source, ppl_export = ref.perplexity, got.perplexity
    ratio = (ppl_export["perplexity"] / ppl_source["perplexity"]
             if ppl_source["perplexity"] and ppl_export["perplexity"] is not None else None)
    answers = [{"question": question, src: a.text, dst: b.text, "same": a.text == b.text,
                "degenerate": _degenerate(b) if not _degenerate(a) else None}
               for question, a, b in zip(PROBES, ref.answers, got.answers)]
    checks = {
        "tokenizer": encoding,
        "logits": logits,
        "perplexity": {"rows": rows, "tokens": ppl_source["loss_tokens"], src: ppl_source["perplexity"],
                       dst: ppl_export["perplexity"], "ratio": ratio, "bound": bound},
        "answers": answers,
    }
    problems = [f"its tokenizer differs from the source's ({name.removesuffix('_equal').replace('_', ' ')}: no)"
                for name, ok in encoding.items() if not ok]
    if not logits["finite"] or ppl_export["perplexity"] is None or not math.isfinite(ppl_export["loss"]):
        problems.append("its logits are not finite (NaN or inf)")
    elif ratio is None or ratio > bound:
        problems.append(f"its held-out perplexity is {ppl_export['perplexity']:.4g} against the source model's "
                        f"{ppl_source['perplexity']:.4g} (ratio {ratio:.4f} > bound {bound})")
    problems += [f"its answer to {a['question']!r} {a['degenerate']} ({a[dst][:60]!r}) where the source model's "
                 "does not" for a in answers if a["degenerate"]]
    if problems:
        raise Broken(f"the export is broken, so nothing was written: {'; '.join(problems)}.")
    return checks
