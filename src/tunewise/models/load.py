"""Load a causal LM and its tokenizer: a local Hugging Face directory, a hub id, or a built-in name.

A built-in name only resolves to a directory inside the package; from there the path is exactly the one a local
Qwen2.5 directory takes (AutoTokenizer / AutoModelForCausalLM / peft).
"""
from __future__ import annotations

import json
from pathlib import Path

from tunewise.errors import UserError, brief
from tunewise.files import read_json
from tunewise.models.adapter_config import is_lora

BUILTIN_DIR = Path(__file__).parent / "builtin"
BUILTIN_MODELS = {"tunewise-tiny": BUILTIN_DIR / "tunewise-tiny"}
DEFAULT_MODEL = "tunewise-tiny"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_model(name_or_path: str) -> str:
    """A directory path for built-in names and local directories; hub ids are returned unchanged."""
    if name_or_path in BUILTIN_MODELS:
        return str(BUILTIN_MODELS[name_or_path])
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not is_lora(path):
            raise UserError(f"--model {name_or_path}: the directory has no config.json, so it is not a Hugging Face model directory.")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        known = ", ".join(BUILTIN_MODELS)
        raise UserError(f"--model {name_or_path}: no such directory, and not a hub id (owner/name) or a built-in model ({known}).")
    return name_or_path


def portable_name(name_or_path: str) -> str:
    """How an adapter names its base so that it loads elsewhere: a built-in model's name or a hub id as given (not
    this install's path), a local directory as an absolute path."""
    if name_or_path in BUILTIN_MODELS or not Path(name_or_path).expanduser().exists():
        return name_or_path
    return str(Path(name_or_path).expanduser().resolve())


def check_model_dir(model_dir: str) -> None:
    """A local model directory whose config.json or weight files cannot be read is a UserError now, before a run
    directory exists, not a traceback after (a hub id is checked when it is downloaded). Reads only config.json and
    the safetensors headers, which also tell a truncated file (the offsets reach past its end)."""
    path = Path(model_dir)
    if not path.is_dir():
        return
    from safetensors import SafetensorError, safe_open
    from transformers import AutoConfig

    config = path / "config.json"
    if config.is_file():
        try:
            AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError, KeyError) as e:  # json.JSONDecodeError is a ValueError
            raise UserError(f"{config}: not a readable model config ({brief(e, 200)}).") from e
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise UserError(f"{weights}: not a complete safetensors file ({e}); copy or download it again.") from e


def builtin_meta(model_dir: str) -> dict:
    """tunewise.json of a built-in model (default identity, recommended hyper-parameters, scores), else {}."""
    meta = Path(model_dir) / "tunewise.json"
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else {}


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise UserError(f"--torch_dtype {name}: expected one of {', '.join(DTYPES)}.")
    if name == "auto":
        return "auto"
    return getattr(torch, name)


def saved_chat_template(folder: str) -> str | None:
    """The chat template a local tokenizer folder holds (chat_template.jinja or tokenizer_config.json), or None."""
    path = Path(folder)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    config = read_json(path / "tokenizer_config.json", {})
    template = config.get("chat_template") if isinstance(config, dict) else None
    return template if isinstance(template, str) else None


def load_tokenizer(model_dir: str, template: str | None = None):
    """The tokenizer of `model_dir`, with --template's chat template when one is named (else its own, which it
    must have), a pad token, and a template checked to end replies with a special token."""
    from transformers import AutoTokenizer

    from tunewise.data.templates import apply_template, names, turn_end

    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError) as e:  # a missing or corrupt tokenizer file, or a hub id that is not one
        raise UserError(f"{model_dir}: cannot load its tokenizer ({brief(e, 200)}).") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if template:
        apply_template(tok, template, model_dir)
    elif not tok.chat_template:
        raise UserError(f"{model_dir}: the tokenizer has no chat template (a base model); pass --template NAME "
                        f"({names()}: plain for Human:/Assistant: text) or use a chat (instruct) model.")
    turn_end(tok)
    return tok


def load_model(model_dir: str, dtype: str = "auto", attn_implementation: str | None = None, quantization=None,
               gradient_checkpointing: bool = False):
    """The model of `model_dir`; with `quantization` (tunewise.models.quantization.Quantization: QLoRA's base) its
    linear layers load in bitsandbytes' 4 or 8 bits and the model is made ready to train adapters on."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    kwargs = {"dtype": torch_dtype(dtype)}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        from tunewise.models.quantization import bnb_config

        kwargs["quantization_config"] = bnb_config(quantization, kwargs["dtype"])
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar before every answer of `infer --query` is noise
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        if quantization is not None:
            from tunewise.models.quantization import for_training

            model = for_training(model, gradient_checkpointing)
        return model
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise UserError(f"{model_dir}: cannot load the model ({brief(e)}).") from e
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: the one the chat template writes, the tokenizer's eos, and ChatML's
    <|im_end|> and <|endoftext|> when present."""
    from tunewise.data.templates import turn_end

    ids = []
    for token in (turn_end(tokenizer), tokenizer.eos_token, "<|im_end|>", "<|endoftext|>"):
        if token and token in tokenizer.get_vocab():
            tid = tokenizer.convert_tokens_to_ids(token)
            if tid not in ids:
                ids.append(tid)
    return ids


def module_layout(model_dir: str) -> tuple[str, tuple[str, ...], frozenset[str], dict[str, float]]:
    """(architecture, its `_no_split_modules`, the nn.Module classes its modeling code defines, the dropouts its
    config sets above 0), from config.json and the model class alone, no weights loaded: what FSDP's auto-wrap and
    its checkpointing check need before launch."""
    import sys

    import torch
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{model_dir}: not a readable model config ({brief(e, 200)}).") from e
    cls = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if cls is None:
        raise UserError(f"{model_dir}: {type(config).__name__} is not a causal LM transformers knows; FSDP needs its "
                        "model class to find the decoder layers.")
    module = sys.modules[cls.__module__]
    classes = frozenset(name for name, obj in vars(module).items()
                        if isinstance(obj, type) and issubclass(obj, torch.nn.Module))
    dropouts = {key: value for key, value in config.to_dict().items()
                if ("dropout" in key or key.endswith("pdrop")) and "classifier" not in key
                and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0}
    return cls.__name__, tuple(cls._no_split_modules or ()), classes, dropouts
