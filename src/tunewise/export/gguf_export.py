"""`tunewise export --quant_method gguf`: a LoRA checkpoint (merged in memory) or a plain model (--model alone) as
one GGUF file, with an Ollama Modelfile when --to_ollama true, published only once the file, read back by
transformers (`from_pretrained(dir, gguf_file=...)`, which dequantizes it), computes what the model does, and its
architecture keys and tensor list, read with gguf's GGUFReader, are the model's (for Qwen3 the only proof of them:
transformers' reader ignores qwen3.attention.key_length, so its read-back is given the model's config)."""
from __future__ import annotations

import contextlib
import copy
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tunewise.args import ExportArgs
from tunewise.errors import UserError


def gguf_source(args: ExportArgs):
    """What to write: a LoRA checkpoint to merge, a full checkpoint, or --model alone."""
    from tunewise.models.checkpoint import open_checkpoint

    if len(args.adapters) > 1:
        raise UserError("--adapters: give the one checkpoint to export.")
    if not args.adapters and not args.model:
        raise UserError("--quant_method gguf: give the LoRA checkpoint (--adapters CKPT) or the model (--model M).")
    spec = open_checkpoint(args.model, args.adapters)
    if spec.adapter and not args.merge_lora:
        raise UserError("--merge_lora false: a GGUF of the adapter alone is not written; the GGUF holds the model "
                        "with the adapter merged (--merge_lora true).")
    return spec


def default_output(spec, gguf_type: str) -> Path:
    """CHECKPOINT-gguf-TYPE beside the checkpoint (or the model's folder); ./NAME-gguf-TYPE for a built-in or hub
    model."""
    from tunewise.models.load import BUILTIN_MODELS

    where = spec.adapter or spec.base
    if spec.adapter or (Path(where).is_dir() and spec.base_name not in BUILTIN_MODELS):
        return Path(str(Path(where).resolve()) + f"-gguf-{gguf_type}")
    return Path(re.sub(r"[^A-Za-z0-9._-]+", "--", spec.base_name) + f"-gguf-{gguf_type}")


def _generation_config(model_dir: str):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(model_dir)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _cores_shared(ways: int):
    """torch's threads split between the export's `ways` concurrent workers. Its default, every core for each,
    oversubscribes the cores, and OpenMP's waiting threads spin: measured at Qwen2.5-0.5B's shape on 2 shared cores,
    the greedy probe answers cost 22.4 CPU s with 2 threads and 7.9 with 1 (perplexity 10.2 and 3.7), and the
    wall time was shorter with 1 as well."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // ways))
    try:
        yield max(1, threads // ways)
    finally:
        torch.set_num_threads(threads)


def _measured_in_thread(threads: int, side, system, conversations):
    import torch

    from tunewise.export.checks import measure

    torch.set_num_threads(threads)  # a pool thread sets up its own OpenMP team
    return measure(side, system, conversations)


def export_gguf(args: ExportArgs) -> dict:
    from transformers import AutoConfig

    from tunewise.errors import brief
    from tunewise.export.checks import Broken, Side, compare, encoding_check, heldout_conversations
    from tunewise.export.ggml_quants import GGUF_TYPES, check_available
    from tunewise.export.gguf_file import check_tokenizer, family_of, write_gguf
    from tunewise.export.gguf_metadata import check_metadata
    from tunewise.export.gguf_readback import load_gguf_model, load_gguf_tokenizer, parsed_once
    from tunewise.export.report import how_to_run, write_export_json
    from tunewise.models.checkpoint import load
    from tunewise.models.merge import check_target, staged_folder

    # everything that can refuse the export does so before a weight is loaded or a byte written
    check_available(args.gguf_type)
    spec = gguf_source(args)
    label = spec.adapter or spec.base_name
    config = AutoConfig.from_pretrained(spec.base)
    family = family_of(config, label)
    tokenizer = spec.load_tokenizer()
    check_tokenizer(tokenizer, label)
    out = Path(args.output_dir) if args.output_dir else default_output(spec, args.gguf_type)
    check_target(out, Path(spec.adapter or spec.base), args.overwrite)
    generation_config = _generation_config(spec.base)
    eos = getattr(generation_config, "eos_token_id", None) if generation_config else None
    eos_ids = [e for e in ([eos] if isinstance(eos, int) else list(eos or [])) if e is not None]
    gguf_name = f"model-{args.gguf_type}.gguf"
    modelfile_text, ollama = None, None
    if args.to_ollama:
        from tunewise.export.ollama import modelfile

        modelfile_text, ollama = modelfile(gguf_name, tokenizer, spec.system, generation_config, eos_ids,
                                           getattr(config, "max_position_embeddings", None))
    conversations = heldout_conversations(args.dataset)

    model = load(spec, "float32", adapter="merged").eval()  # float32: every weight exactly, whatever it was saved in
    bound = GGUF_TYPES[args.gguf_type].ppl_bound
    # transformers' GGUF reader is Python-bound (gguf_readback.py), the measurements are torch: the source model is
    # measured while the file is written and read back, the export's model while its tokenizer is read back (on the
    # source's token ids, which encoding_check then shows equal to the file's). Each thread has a tokenizer of its
    # own (a fast tokenizer is not shared between threads): copies of the one loaded, not parsed again.
    with _cores_shared(2) as threads, ThreadPoolExecutor(max_workers=2) as pool, staged_folder(out) as tmp:
        source_measured = pool.submit(_measured_in_thread, threads, Side(model, copy.deepcopy(tokenizer)),
                                      spec.system, conversations)
        start = time.perf_counter()
        types = write_gguf(tmp / gguf_name, model.state_dict(), model.config, tokenizer, args.gguf_type,
                           Path(label).name)
        written = time.perf_counter()
        if modelfile_text:
            (tmp / "Modelfile").write_text(modelfile_text, encoding="utf-8")
        with parsed_once(tmp / gguf_name):
            metadata = check_metadata(tmp / gguf_name, model.config, model.state_dict(), family)
            try:
                exported = load_gguf_model(tmp, gguf_name, None if family.config_read_back else model.config)
            except (OSError, ValueError, RuntimeError, KeyError) as e:
                raise Broken(f"the export is broken, so nothing was written: transformers cannot read the file "
                             f"back ({brief(e, 300)}).") from e
            export_measured = pool.submit(_measured_in_thread, threads, Side(exported, copy.deepcopy(tokenizer)),
                                          spec.system, conversations)
            encoding = encoding_check(tokenizer, load_gguf_tokenizer(tmp, gguf_name), spec.system, conversations)
        checks = compare(("source", "gguf"), source_measured.result(), export_measured.result(), encoding, bound,
                         len(conversations))
        del exported
        checks = {"metadata": metadata, **checks}
        summary = {
            "kind": "gguf", "output_dir": str(out), "compared": ["source", "gguf"],
            "source": {"base": spec.base_name, "adapter": spec.adapter, "system": spec.system},
            "gguf": {"file": gguf_name, "type": args.gguf_type, "about": GGUF_TYPES[args.gguf_type].about,
                     "tensor_types": types, "architecture": family.name,
                     "config_read_back": "from the file's metadata" if family.config_read_back else
                     "given the source model's config: transformers' GGUF reader ignores "
                     f"{family.name}.attention.key_length; the architecture keys are checked by reading them with "
                     "gguf's GGUFReader (checks.metadata)"},
            "ollama": ollama,
            "checks": checks,
            "seconds": {"write": round(written - start, 2), "checks": round(time.perf_counter() - written, 2)},
            "run": how_to_run("gguf", out, label, gguf_name, args.to_ollama, spec.system),
        }
        write_export_json(tmp, summary)
    return summary

