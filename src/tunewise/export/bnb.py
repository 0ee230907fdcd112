"""`tunewise export --quant_method bnb --quant_bits 4|8`: a Hugging Face model directory whose linear layers are held
in bitsandbytes' NF4 (double-quantized) or LLM.int8 weights, loadable with `AutoModelForCausalLM.from_pretrained`
alone (config.json carries its quantization_config), tokenizer and chat template included.

`write_bnb` quantizes a plain model directory (a merged export, or a base model) and checks what it wrote by
loading it back, as a user would, against the unquantized model: the perplexity on held-out rows (tunewise's
held-out additions and concise_heldout replies, which neither the built-in model nor a tunewise run trains on),
the largest logits difference on fixed prompts, and greedy answers to probe questions. A broken export (non-finite
values, a perplexity ratio past the bound, answers that loop where the original's do not) is a UserError.

Everything runs on the CPU: the quantized format is the same on every device, and bitsandbytes 0.50's CPU backend
quantizes and computes both 4 and 8 bits (benchmarks/QUANT.md).
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

from tunewise.errors import UserError
from tunewise.models.quantization import Quantization, bnb_config, check_backend, say_casts_once

# The held-out perplexity of the quantized model may be at most this many times the original's. Measured on the
# embedded model (benchmarks/QUANT.md; quantization is deterministic, no seed enters it): NF4 0.998 and LLM.int8
# 1.000 for a correct file, 1.48 for a 4-bit file that bitsandbytes' CPU repacking corrupted: the bounds sit well
# above the correct files (larger models lose less to rounding than this 4.4 M-parameter one) and below the corrupt.
PERPLEXITY_BOUND = {4: 1.2, 8: 1.05}
PROBE_MAX_NEW_TOKENS = 48
HELDOUT_ADDITIONS = 40


def heldout_rows(tokenizer) -> list[dict]:
    """Encoded {input_ids, labels} rows no tunewise model trains on: held-out additions (the built-in model's
    pretraining leaves them out) and the concise_heldout prompts with their chosen replies."""
    from tunewise.data.encode import encode_conversation
    from tunewise.data.preference import PREFERENCE_SETS
    from tunewise.evaluate.skills import addition_answer, addition_prompt, heldout_addition_pairs
    from tunewise.files import read_jsonl

    chats = [[{"role": "user", "content": addition_prompt(a, b, i)},
              {"role": "assistant", "content": addition_answer(a, b)}]
             for i, (a, b) in enumerate(heldout_addition_pairs()[:HELDOUT_ADDITIONS])]
    chats += [[{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["chosen"]}]
              for row in read_jsonl(PREFERENCE_SETS["concise_heldout"])]
    rows = []
    for messages in chats:
        ids, labels = encode_conversation(tokenizer, messages)
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def probe_questions() -> list[str]:
    from tunewise.evaluate.skills import addition_prompt, heldout_addition_pairs

    a, b = heldout_addition_pairs()[7]
    return ["Who are you?", "你是谁？", addition_prompt(a, b, 1)]


def fixed_prompts(tokenizer) -> list[list[int]]:
    from tunewise.data.template import prompt_ids

    return [prompt_ids(tokenizer, [{"role": "user", "content": q}]) for q in probe_questions()]


def max_logits_difference(reference, quantized, prompts: list[list[int]]) -> tuple[float, float]:
    """(largest |quantized - reference| logit over every position of the prompts, largest |reference| logit)."""
    import torch

    diff, scale = 0.0, 0.0
    with torch.no_grad():
        for ids in prompts:
            x = torch.tensor([ids])
            ref = reference(input_ids=x).logits.float()
            q = quantized(input_ids=x).logits.float()
            if not torch.isfinite(q).all():
                raise UserError("the quantized model computes non-finite logits (NaN or inf); the export is broken.")
            diff = max(diff, (q - ref).abs().max().item())
            scale = max(scale, ref.abs().max().item())
    return diff, scale


def probe_answers(model, tokenizer) -> list[dict]:
    """Greedy (temperature 0) replies to the probe questions: text, and whether it loops or runs on."""
    from tunewise.evaluate.repetition import repeated_ngram
    from tunewise.models.generate import greedy_generations

    replies = greedy_generations(model, tokenizer, [[{"role": "user", "content": q}] for q in probe_questions()],
                                 max_new_tokens=PROBE_MAX_NEW_TOKENS)
    return [{"question": q, "answer": r.text, "loops": repeated_ngram(r.text), "finish_reason": r.finish_reason}
            for q, r in zip(probe_questions(), replies)]


def compare(reference, quantized, tokenizer, bits: int) -> dict:
    """The checks of a quantized model against its original; a UserError for a broken one."""
    from tunewise.evaluate.loss import dataset_loss

    rows = heldout_rows(tokenizer)
    before = dataset_loss(reference, tokenizer, rows)
    after = dataset_loss(quantized, tokenizer, rows)
    if after["loss"] is None or not math.isfinite(after["loss"]):
        raise UserError(f"the quantized model's held-out loss is {after['loss']}; the export is broken.")
    ratio = after["perplexity"] / before["perplexity"]
    diff, scale = max_logits_difference(reference, quantized, fixed_prompts(tokenizer))
    original, answers = probe_answers(reference, tokenizer), probe_answers(quantized, tokenizer)
    checks = {
        "heldout_rows": len(rows), "heldout_tokens": after["loss_tokens"],
        "perplexity_unquantized": before["perplexity"], "perplexity_quantized": after["perplexity"],
        "perplexity_ratio": ratio, "perplexity_ratio_bound": PERPLEXITY_BOUND[bits],
        "max_abs_logits_diff": diff, "max_abs_logits_unquantized": scale,
        "probes": [{"question": o["question"], "unquantized": o["answer"], "quantized": q["answer"]}
                   for o, q in zip(original, answers)],
    }
    if ratio > PERPLEXITY_BOUND[bits]:
        raise UserError(f"the {bits}-bit model's held-out perplexity is {after['perplexity']:.3f} against "
                        f"{before['perplexity']:.3f} unquantized, a ratio of {ratio:.3f}, past the bound of "
                        f"{PERPLEXITY_BOUND[bits]} (tunewise.export.bnb.PERPLEXITY_BOUND); this model does not survive "
                        f"{bits}-bit rounding{'; try --quant_bits 8' if bits == 4 else ''}.")
    looping = [(o, q) for o, q in zip(original, answers) if q["loops"] and not o["loops"]]
    if looping:
        o, q = looping[0]
        raise UserError(f"the {bits}-bit model's answer to {q['question']!r} repeats {q['loops']!r} over and over, "
                        f"where the unquantized model's does not ({o['answer'][:80]!r}); the export is degenerate.")
    return checks


@contextlib.contextmanager
def quiet_loading():
    """transformers' loading and writing progress bars off (as models/load.py has them for every load)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def write_bnb(model_dir: Path, out: Path, bits: int) -> dict:
    """Quantize the plain HF model directory `model_dir` to `bits` (4: NF4 with double quantization, computing in
    the weights' dtype; 8: LLM.int8) into the folder `out` (the caller's temporary folder), and return the checks
    of the written model loaded back against the original (`compare`)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunewise.models.load import load_model, load_tokenizer

    if bits not in (4, 8):
        raise UserError(f"--quant_bits {bits}: bitsandbytes exports 4 or 8 bits.")
    check_backend(bits, "cpu", f"--quant_method bnb --quant_bits {bits}")
    say_casts_once()
    config = AutoConfig.from_pretrained(str(model_dir))
    if getattr(config, "quantization_config", None):
        raise UserError(f"{model_dir}: the model is already quantized ({config.quantization_config.get('quant_method')}); "
                        "export from the unquantized model or checkpoint.")
    tokenizer = load_tokenizer(str(model_dir))
    weights_dtype = config.dtype if isinstance(config.dtype, torch.dtype) else torch.float32
    quant = Quantization(bits, "nf4", True)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=weights_dtype, device_map={"": "cpu"},
                                                     quantization_config=bnb_config(quant, weights_dtype))
        # saved before any forward: bitsandbytes' CPU inference repacking would corrupt it (models/quantization.py)
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        del model
        written = AutoModelForCausalLM.from_pretrained(str(out), device_map={"": "cpu"}).eval()
    reference = load_model(str(model_dir), "auto").eval()
    checks = compare(reference, written, tokenizer, bits)
    size = lambda folder: sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
    return {"quant_method": "bnb", "quant_bits": bits, "quantization": quant.describe(), "weights_bytes": size(out),
            "unquantized_weights_bytes": size(model_dir), **checks}

