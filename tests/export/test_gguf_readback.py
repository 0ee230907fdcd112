"""Reading an export back parses the file once (gguf_readback.parsed_once) and yields what transformers' plain
`from_pretrained(dir, gguf_file=...)` yields: the same config, weights and tokenizer."""
import gguf
import numpy as np
import pytest
import torch
import transformers.modeling_gguf_pytorch_utils as gguf_loading

from tunewise.export.gguf_file import write_gguf
from tunewise.export.gguf_readback import load_gguf_model, load_gguf_tokenizer, parsed_once
from tunewise.models.load import load_model, load_tokenizer, resolve_model

TINY = resolve_model("tunewise-tiny")
TEXT = "<|im_start|>user\n12+34=?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    model, tok = load_model(TINY, "float32").eval(), load_tokenizer(TINY)
    folder = tmp_path_factory.mktemp("gguf")
    write_gguf(folder / "m.gguf", model.state_dict(), model.config, tok, "q8_0", "tunewise-tiny")
    return folder


@pytest.fixture
def parses(monkeypatch):
    """The paths gguf-py's GGUFReader is asked to parse (installed before parsed_once, which wraps it)."""
    seen = []
    real = gguf.GGUFReader

    class Counting(real):
        def __init__(self, path, mode="r"):
            seen.append(str(path))
            super().__init__(path, mode)

    monkeypatch.setattr(gguf, "GGUFReader", Counting)
    return seen


def test_the_file_is_parsed_once_and_read_as_transformers_reads_it(written, parses):
    plain_model, plain_tok = load_gguf_model(written, "m.gguf"), load_gguf_tokenizer(written, "m.gguf")
    assert len(parses) == 3  # transformers alone: config, weights, the tokenizer's config
    parses.clear()
    with parsed_once(written / "m.gguf"):
        model, tok = load_gguf_model(written, "m.gguf"), load_gguf_tokenizer(written, "m.gguf")
    assert len(parses) == 1
    assert model.config.to_dict() == plain_model.config.to_dict()
    plain_weights = plain_model.state_dict()
    assert all(torch.equal(w, plain_weights[name]) for name, w in model.state_dict().items())
    assert tok(TEXT)["input_ids"] == plain_tok(TEXT)["input_ids"] and tok.chat_template == plain_tok.chat_template
    assert tok.get_vocab() == plain_tok.get_vocab()


def test_only_the_named_file_is_shared_and_everything_is_restored(written, parses, tmp_path):
    real_reader, real_load = gguf.GGUFReader, gguf_loading.load_gguf_checkpoint
    other = tmp_path / "other.gguf"
    other.write_bytes((written / "m.gguf").read_bytes())
    with parsed_once(written / "m.gguf"):
        first = gguf_loading.load_gguf_checkpoint(str(written / "m.gguf"))
        first["config"]["vocab_size"] = -1  # a caller mutating its copy changes nothing for the next
        assert gguf_loading.load_gguf_checkpoint(str(written / "m.gguf"))["config"]["vocab_size"] == 6144
        gguf_loading.load_gguf_checkpoint(str(other))
        gguf_loading.load_gguf_checkpoint(str(other))
    assert parses == [str(written / "m.gguf"), str(other), str(other)]
    assert (gguf.GGUFReader, gguf_loading.load_gguf_checkpoint) == (real_reader, real_load)


def test_a_file_rewritten_meanwhile_is_parsed_again(written, parses, tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes((written / "m.gguf").read_bytes())
    with parsed_once(path):
        gguf.GGUFReader(path)
        path.write_bytes(path.read_bytes() + b"\0" * 32)  # another size: another file
        gguf.GGUFReader(path)
    assert len(parses) == 2


def test_the_plain_array_parse_holds_the_same_fields_and_tensors(written):
    from tunewise.export.gguf_readback import _plain_array_reader

    mapped, plain = gguf.GGUFReader(written / "m.gguf"), _plain_array_reader(gguf.GGUFReader)(written / "m.gguf")
    assert type(plain.data) is np.ndarray and isinstance(mapped.data, np.memmap)
    assert {k: f.contents() for k, f in plain.fields.items()} == {k: f.contents() for k, f in mapped.fields.items()}
    assert [(t.name, t.tensor_type) for t in plain.tensors] == [(t.name, t.tensor_type) for t in mapped.tensors]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(plain.tensors, mapped.tensors))
