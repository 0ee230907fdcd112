"""GGUF exports run by llama.cpp itself (build b4965, the prebuilt CPU llama.cpp of llama-cpp-cffi 0.4.42 in
.venv-llamacpp/, through src/tunewise/export/llamacpp_run.py): it loads each type, tokenizes the prompts to the
Hugging Face tokenizer's ids (Qwen2.5's real tokenizer too), answers the demo's three questions as the merged model
(and the demo's fine-tune as its adapter) does, its logits stay near transformers' on the same file and its held-out
perplexity within the bound tunewise states for the type. Skipped when there is no .venv-llamacpp
(`bash scripts/setup_llamacpp.sh`; CI has none: it is a 291 MB wheel)."""
import json
import subprocess
from pathlib import Path

import pytest
import torch

from cli_runs import run_cli
from tunewise.export.checks import PROBE_TOKENS, PROBES

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv-llamacpp" / "bin" / "python"
RUNNER = ROOT / "src" / "tunewise" / "export" / "llamacpp_run.py"
pytestmark = pytest.mark.skipif(
    not PYTHON.exists(), reason="no llama.cpp to run: `bash scripts/setup_llamacpp.sh` makes .venv-llamacpp/ "
                                "(llama-cpp-cffi 0.4.42's prebuilt CPU llama.cpp in a venv of its own, 330 MB)")
TYPES = ("f16", "q8_0", "q4_k_m")

# Largest |logit difference|, llama.cpp against transformers reading the same file (both dequantize the same
# blocks; llama.cpp also rounds the activations: to float16 against F16 weights, to 8-bit blocks against Q8_0 and
# the K-quants), over every position of the three probe prompts of the test adapter's export (logits up to ~21).
# Measured 2026-12-05, deterministic on one CPU kind (one llama.cpp thread): BOUNDS are 3x the measured values.
MEASURED_MAX_ABS_DIFF = {"f16": 0.0190, "q8_0": 0.185, "q4_k_m": 0.490}
BOUNDS = {t: 3 * v for t, v in MEASURED_MAX_ABS_DIFF.items()}


def llamacpp(gguf: Path, prompts: list, *flags) -> dict:
    """The runner's JSON for `prompts` on `gguf`; its error (llama.cpp's log) fails the test."""
    prompts_file = gguf.parent / "llamacpp-prompts.json"
    prompts_file.write_text(json.dumps(prompts, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run([str(PYTHON), str(RUNNER), str(gguf), str(prompts_file), *map(str, flags)],
                          capture_output=True, text=True, timeout=600)
    prompts_file.unlink()
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_runner_reports_llama_cpps_build():
    done = subprocess.run([str(PYTHON), str(RUNNER), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["llama_cpp"]["build"] == 4965


def test_a_file_llama_cpp_cannot_load_is_an_error_with_its_log(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 8)  # version 3, then the counts cut short
    (tmp_path / "p.json").write_text('["hi"]')
    done = subprocess.run([str(PYTHON), str(RUNNER), str(bad), str(tmp_path / "p.json")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and f"llama.cpp could not load {bad}" in done.stderr
    assert "llama_model_load: error loading model" in done.stderr  # llama.cpp's own log follows


@pytest.fixture(scope="module")
def exports(lora_checkpoint, tmp_path_factory):
    """The test adapter merged into tunewise-tiny, exported by `tunewise export` as each GGUF type."""
    root = tmp_path_factory.mktemp("llamacpp")
    found = {}
    for gguf_type in TYPES:
        out = root / gguf_type
        assert run_cli("export", "--adapters", lora_checkpoint, "--quant_method", "gguf", "--gguf_type", gguf_type,
                       "--output_dir", out) == 0
        found[gguf_type] = out
    return found


@pytest.fixture(scope="module")
def probe_prompts(lora_checkpoint):
    """The probe questions rendered as tunewise renders them (the source tokenizer's template, the run's system
    prompt), their token ids, and the same conversations as messages for llama.cpp to render."""
    from tunewise.data.template import prompt_ids, render, with_system
    from tunewise.models.checkpoint import open_checkpoint

    spec = open_checkpoint(None, [str(lora_checkpoint)])
    tok = spec.load_tokenizer()
    convs = [[{"role": "user", "content": q}] for q in PROBES]
    return {"texts": [render(tok, c, spec.system) for c in convs],
            "ids": [prompt_ids(tok, c, spec.system) for c in convs],
            "messages": [{"messages": with_system(c, spec.system)} for c in convs]}


@pytest.fixture(scope="module")
def ran(exports, probe_prompts):
    """llama.cpp on each export: the rendered probe prompts (every logit of every position), then the same
    conversations rendered by llama_chat_apply_template."""
    return {t: llamacpp(folder / f"model-{t}.gguf", probe_prompts["texts"] + probe_prompts["messages"],
                        "--max_tokens", PROBE_TOKENS, "--all_logits")
            for t, folder in exports.items()}


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", TYPES)
def test_llama_cpp_tokenizes_as_the_hf_tokenizer(ran, probe_prompts, gguf_type):
    out = ran[gguf_type]
    assert out["model"]["architecture"] == "qwen2" and out["model"]["tokenizer_pre"] == "qwen2"
    assert out["model"]["n_vocab"] == 6144 and out["model"]["add_bos"] is False
    given, templated = out["results"][:3], out["results"][3:]
    assert [r["ids"] for r in given] == probe_prompts["ids"]
    # this llama.cpp does not run the Jinja template: it recognises ChatML in it and writes ChatML, the same text
    assert [r["text"] for r in templated] == probe_prompts["texts"]
    assert [r["ids"] for r in templated] == probe_prompts["ids"]


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", TYPES)
def test_llama_cpp_answers_the_demo_questions_as_the_merged_model(ran, exports, gguf_type):
    """Greedy, up to the export check's 40 tokens: llama.cpp's replies are the merged model's (transformers,
    float32), recorded by the export in export.json."""
    source = [a["source"] for a in json.loads((exports[gguf_type] / "export.json").read_text())["checks"]["answers"]]
    got = ran[gguf_type]["results"]
    assert [r["reply"] for r in got[:3]] == source and all(r["finish_reason"] == "stop" for r in got[:3])
    assert [r["reply_ids"] for r in got[3:]] == [r["reply_ids"] for r in got[:3]]


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", TYPES)
def test_the_demo_fine_tune_answers_in_llama_cpp_as_the_adapter(identity_run, tmp_path, gguf_type):
    """The demo's identity fine-tune (tests/conftest.py identity_run) exported as each type: llama.cpp's greedy
    answers to the demo's three questions are the adapter's (export.json's "source", transformers)."""
    out = tmp_path / gguf_type
    assert run_cli("export", "--adapters", identity_run / "last", "--quant_method", "gguf", "--gguf_type", gguf_type,
                   "--output_dir", out) == 0
    source = [a["source"] for a in json.loads((out / "export.json").read_text())["checks"]["answers"]]
    assert "小黄" in source[0] and "Xiao Huang" in source[1]
    system = open_checkpoint_system(identity_run / "last")
    convs = [{"messages": ([{"role": "system", "content": system}] if system else []) + [{"role": "user",
                                                                                         "content": q}]}
             for q in PROBES]
    got = llamacpp(out / f"model-{gguf_type}.gguf", convs, "--max_tokens", PROBE_TOKENS)["results"]
    print(f"{gguf_type}: llama.cpp answers the demo's questions: {[r['reply'] for r in got]}")
    assert [r["reply"] for r in got] == source


def open_checkpoint_system(checkpoint) -> str | None:
    from tunewise.models.checkpoint import open_checkpoint

    return open_checkpoint(None, [str(checkpoint)]).system


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", TYPES)
def test_llama_cpp_logits_match_transformers_on_the_same_file(ran, exports, probe_prompts, gguf_type):
    from transformers import AutoModelForCausalLM

    folder = exports[gguf_type]
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=f"model-{gguf_type}.gguf",
                                                 dtype=torch.float32).eval()
    diffs, agree, positions = [], 0, 0
    for ids, result in zip(probe_prompts["ids"], ran[gguf_type]["results"][:3]):
        with torch.no_grad():
            hf = model(input_ids=torch.tensor([ids])).logits[0]
        cpp = torch.tensor(result["prompt_logits"])
        assert cpp.shape == hf.shape and torch.isfinite(cpp).all()
        assert torch.equal(cpp[-1], torch.tensor(result["first_logits"]))
        diffs.append(float((cpp - hf).abs().max()))
        agree += int((cpp.argmax(-1) == hf.argmax(-1)).sum())
        positions += len(ids)
        top = [i for i, _ in result["first_logits_top"]]
        assert top[0] == int(hf[-1].argmax())
    print(f"{gguf_type}: llama.cpp vs transformers on the same file: max |logit diff| {max(diffs):.4g} "
          f"({', '.join(f'{d:.4g}' for d in diffs)}), argmax agreement {agree}/{positions}")
    assert max(diffs) < BOUNDS[gguf_type]


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", TYPES)
def test_llama_cpp_perplexity_is_within_the_types_bound(exports, lora_checkpoint, gguf_type):
    """The export check's held-out rows scored by llama.cpp: its perplexity against the merged model's (export.json)
    within the bound tunewise states for the type (GGUF_TYPES: 1.01 for f16 and q8_0, 1.10 for q4_k_m)."""
    import math

    from tunewise.data.encode import encode_dataset
    from tunewise.export.checks import MAX_LENGTH, heldout_conversations
    from tunewise.export.ggml_quants import GGUF_TYPES
    from tunewise.models.checkpoint import open_checkpoint

    spec = open_checkpoint(None, [str(lora_checkpoint)])
    rows = encode_dataset(spec.load_tokenizer(), heldout_conversations(None), spec.system, MAX_LENGTH)[0]
    out = llamacpp(exports[gguf_type] / f"model-{gguf_type}.gguf",
                   [{"ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    nll = math.fsum(r["nll_sum"] for r in out["results"])
    tokens = sum(r["nll_tokens"] for r in out["results"])
    perplexity = json.loads((exports[gguf_type] / "export.json").read_text())["checks"]["perplexity"]
    assert tokens == perplexity["tokens"]
    ours = math.exp(nll / tokens)
    print(f"{gguf_type}: held-out perplexity, llama.cpp {ours:.5f}, transformers on the file "
          f"{perplexity['gguf']:.5f}, merged model {perplexity['source']:.5f} ({tokens} tokens)")
    assert ours / perplexity["source"] < GGUF_TYPES[gguf_type].ppl_bound


# 0.5B-tiny's f16 file in llama.cpp against the float32 model: the 50 largest next-token logits (random weights:
# logits up to 1.1) differ by 0.00021-0.00031 over the 5 texts, measured 2026-12-05; bounded at 3x.
QWEN_F16_MAX_ABS_DIFF = 0.00092

# Qwen's real tokenizer (benchmarks/qwen_shape.py): byte-level BPE with 151,387 merges and Qwen2's split regex, which
# llama.cpp reimplements for tokenizer.ggml.pre "qwen2". Digits one by one, runs of spaces and newlines, CJK, emoji.
QWEN_TEXTS = [
    "Hello world! The quick brown fox jumps over 13 lazy dogs, doesn't it?\n\n  Indented.",
    "你好，世界！今天天气很好，我们去公园散步吧。机器学习模型的训练需要大量数据。",
    "def add(a, b):\n    return a + b  # 加法\n\n\nprint(add(12, 34))\t# 46\n",
    "混合 mixed 文本 with émojis 🙂👍🏽 and numbers 1234567.89, URLs https://example.com/a?b=1&c=二.",
    "<|im_start|>user\n12+34=?<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def qwen_gguf(tmp_path_factory):
    """benchmarks/qwen_shape.py's 0.5B-tiny (Qwen2.5's vocabulary and template, 2 small layers) as an f16 GGUF,
    written by the writer `tunewise export` uses."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.export.gguf_file import write_gguf

    spec = importlib.util.spec_from_file_location("qwen_shape", ROOT / "benchmarks" / "qwen_shape.py")
    qwen_shape = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qwen_shape)
    folder = qwen_shape.build_model("0.5B-tiny", qwen_shape.cache_root())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    path = tmp_path_factory.mktemp("qwen") / "model-f16.gguf"
    write_gguf(path, model.state_dict(), model.config, tok, "f16", "qwen2.5-0.5B-tiny")
    return path, model, tok


@pytest.mark.slow
def test_qwens_tokenizer_in_llama_cpp_gives_the_hf_ids(qwen_gguf):
    path, model, tok = qwen_gguf
    system = [{"role": "system", "content": "You are 小黄."}, {"role": "user", "content": "你是谁？ Who are you?"}]
    alone = [{"role": "user", "content": "Who are you?"}]
    out = llamacpp(path, QWEN_TEXTS + [{"messages": system}, {"messages": alone}], "--max_tokens", 1,
                   "--top_k", 50)
    assert out["model"]["n_vocab"] == 151936 and out["model"]["tokenizer_pre"] == "qwen2"
    given, with_system, without = out["results"][:-2], out["results"][-2], out["results"][-1]
    assert [r["ids"] for r in given] == [tok(t, add_special_tokens=False)["input_ids"] for t in QWEN_TEXTS]
    assert all(tok.decode(r["ids"]) == t for r, t in zip(given, QWEN_TEXTS))
    assert with_system["text"] == tok.apply_chat_template(system, tokenize=False, add_generation_prompt=True)
    # Qwen2.5's template adds its default system prompt when a conversation has none; llama.cpp b4965 does not run
    # the Jinja but writes plain ChatML for it, so that line is missing: render prompts with the template first
    hf = tok.apply_chat_template(alone, tokenize=False, add_generation_prompt=True)
    assert without["text"] == hf.replace(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n", "")
    for r in given:  # the weights load and compute: llama.cpp's 50 largest next-token logits against the model's
        with torch.no_grad():
            ref = model(input_ids=torch.tensor([r["ids"]])).logits[0, -1]
        ids, values = zip(*r["first_logits_top"])
        diff = float((torch.tensor(values) - ref[list(ids)]).abs().max())
        print(f"0.5B-tiny f16, {len(r['ids'])} tokens: max |logit diff| of the top 50 vs the float32 model {diff:.3g}")
        assert ids[0] == int(ref.argmax()) and diff < QWEN_F16_MAX_ABS_DIFF
