"""A written GGUF file read back the way its users' transformers reads it (`from_pretrained(dir, gguf_file=...)`):
the model (config from the file's metadata, weights dequantized to float32) and the tokenizer (built from the
file's vocabulary and merges).

transformers parses the file with gguf-py's GGUFReader once for the model's config, again for its weights and again
for the tokenizer's config: at Qwen's 151,936 tokens and 151,387 merges each parse takes ~9 CPU seconds and each
conversion of the parsed fields to Python ~3 more. Within `parsed_once(file)` the file is parsed once (over a plain
numpy view of its memory map: 2.6 CPU s instead of 9.2, since np.memmap runs Python code for each of the ~600k
slices the parse takes; the same fields and tensors) and its metadata converted once; transformers' own code still
builds the config, the weights and the tokenizer from that parse, and any other file is read as usual."""
from __future__ import annotations

import contextlib
import copy
import functools
import os
from pathlib import Path


@contextlib.contextmanager
def _quiet_gguf_loading():
    """transformers' progress bars off, its GGUF reader's own tqdm bar too (the switch misses it)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    shown, bar = hf_logging.is_progress_bar_enabled(), gguf_loading.tqdm
    hf_logging.disable_progress_bar()
    gguf_loading.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_loading.tqdm = bar
        if shown:
            hf_logging.enable_progress_bar()


def _identity(path) -> tuple:
    """The file as it is on disk now: a file rewritten in between is parsed afresh."""
    stat = os.stat(path)
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


def _plain_array_reader(reader_class):
    """gguf-py's GGUFReader, its memory map (`self.data`, set in its __init__) seen as a plain ndarray."""
    import numpy as np

    class PlainArrayReader(reader_class):
        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, mapped):
            self._plain = mapped.view(np.ndarray)  # same bytes, the memmap kept alive as its base

    return PlainArrayReader


@contextlib.contextmanager
def parsed_once(gguf_path: Path):
    """Within the block, gguf-py's parse of `gguf_path` and transformers' metadata-only reading of it
    (`load_gguf_checkpoint(..., return_tensors=False)`, a fresh deep copy each time) are each done once."""
    import gguf
    import transformers.modeling_gguf_pytorch_utils as gguf_loading

    target = _identity(gguf_path)
    real_reader, real_load = gguf.GGUFReader, gguf_loading.load_gguf_checkpoint
    readers: dict = {}
    metadata: dict = {}

    def reader(path, mode="r"):
        if mode != "r" or _identity(path) != target:
            return real_reader(path, mode)
        if "reader" not in readers:
            readers["reader"] = _plain_array_reader(real_reader)(path, mode)
        return readers["reader"]

    def load_gguf_checkpoint(path, return_tensors=False, *args, **kwargs):
        if return_tensors or args or kwargs or _identity(path) != target:
            return real_load(path, return_tensors, *args, **kwargs)
        if "parsed" not in metadata:
            metadata["parsed"] = real_load(path, False)
        return copy.deepcopy(metadata["parsed"])

    gguf.GGUFReader, gguf_loading.load_gguf_checkpoint = reader, load_gguf_checkpoint
    try:
        with _quiet_gguf_loading():
            yield
    finally:
        gguf.GGUFReader, gguf_loading.load_gguf_checkpoint = real_reader, real_load
        readers.clear()
        metadata.clear()


def load_gguf_model(folder: Path, name: str, config=None):
    """The GGUF file as transformers reads it: config from its metadata (or `config`, given), weights dequantized to
    float32. With a config given, a weight of the model the file does not fill (or a tensor of the file the model
    has no place for) is a ValueError, where transformers would only log it."""
    from transformers import AutoModelForCausalLM

    with _quiet_gguf_loading():
        if config is None:
            return AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype="float32").eval()
        model, info = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, config=config,
                                                           dtype="float32", output_loading_info=True)
    unfilled = sorted(info["missing_keys"]) + sorted(info["mismatched_keys"])
    if unfilled or info["unexpected_keys"]:
        raise ValueError(f"the file does not fill {unfilled[:5]} and has no place in the model for "
                         f"{sorted(info['unexpected_keys'])[:5]}")
    return model.eval()


def load_gguf_tokenizer(folder: Path, name: str):
    from transformers import AutoTokenizer

    with _quiet_gguf_loading():
        return AutoTokenizer.from_pretrained(str(folder), gguf_file=name)
