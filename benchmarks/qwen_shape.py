#!/usr/bin/env python3
"""Qwen2.5-shaped fixtures for benchmarks: random weights, the real tokenizer, offline, cached.

    .venv/bin/python benchmarks/qwen_shape.py build --model 0.5B-4L     # prints the model folder
    .venv/bin/python benchmarks/qwen_shape.py data --rows 256 --out rows.jsonl

Models: Qwen2.5's architecture at 0.5B-4L (4 of 0.5B's 24 layers, ~196 M parameters), 0.5B (~494 M) or 7B (~7.6 B,
bfloat16: float32 would not fit in 24 GiB), or the 2-layer CPU stand-ins 0.5B-tiny and 7B-tiny, random init with a fixed seed: losses start near ln(vocab) ~ 11.9 and
nothing is learned, but the compute per token is Qwen's. Tokenizer: Qwen's 151,643 BPE ranks (`qwen.tiktoken` in the
`dashscope` wheel on PyPI, read from the wheel, not installed) through transformers' TikTokenConverter into its
Qwen2Tokenizer pipeline (NFC, Qwen2's split regex, byte-level), <|endoftext|> <|im_start|> <|im_end|> at 151643-5, and
Qwen2.5's chat template. Real Qwen2.5 has 19 more added tokens (<|fim_prefix|>, <tool_call>, ...): plain chats
tokenize the same. Cache: --cache, $TUNEWISE_BENCH_CACHE or ~/.cache/tunewise-bench; a fixture is built when missing,
in a temporary folder renamed into place, so an interrupted build leaves nothing that looks complete.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "dashscope==2.0.2"
RANKS_IN_WHEEL = "dashscope/resources/qwen.tiktoken"
RANKS_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 151643, 151644, 151645, as in Qwen2.5
SEED = 1234

# Qwen2.5-Instruct's chat template, byte for byte (TRL recognises it and has a {% generation %} variant of it)
QWEN25_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

COMMON = dict(vocab_size=151936, rope_theta=1e6, max_position_embeddings=32768, rms_norm_eps=1e-6,
              bos_token_id=151643, eos_token_id=151645, use_sliding_window=False)
SHAPES = {
    "0.5B-4L": dict(hidden_size=896, num_hidden_layers=4, num_attention_heads=14, num_key_value_heads=2,
                    intermediate_size=4864, tie_word_embeddings=True, max_window_layers=4),
    "0.5B": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, tie_word_embeddings=True, max_window_layers=21),
    "7B": dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               intermediate_size=18944, tie_word_embeddings=False, max_window_layers=28),
    # CPU stand-ins for 0.5B and 7B (benchmarks/gpu.sh --cpu): 2 layers, small width, the real vocabulary
    "0.5B-tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=176, tie_word_embeddings=True, max_window_layers=2),
    "7B-tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=352, tie_word_embeddings=False, max_window_layers=2),
}
DTYPES = {"0.5B-4L": "float32", "0.5B": "float32", "7B": "bfloat16", "0.5B-tiny": "float32", "7B-tiny": "float32"}

EN_WORDS = """time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point home water
room mother area money story fact month study book job word business issue side kind head house service friend
river train model data token batch memory quick bright quiet careful simple early late small large green open clear
strong warm cold heavy light run write read build learn carry follow measure explain compare improve remember choose
begin finish share hold bring show watch find keep think become leave feel seem try call need ask turn move""".split()
ZH_WORDS = """时间 今天 明天 我们 你们 他们 学生 老师 学校 朋友 家庭 城市 国家 世界 问题 方法 工作 生活 历史
文化 科学 技术 数据 模型 训练 语言 文字 音乐 电影 故事 经济 社会 发展 研究 实验 结果 原因 影响 环境 天气
春天 夏天 秋天 冬天 早上 晚上 中午 山上 河边 海边 公园 图书馆 医院 银行 商店 市场 饭店 咖啡 茶叶 米饭
面条 水果 苹果 西瓜 红色 蓝色 绿色 美丽 安静 热闹 简单 复杂 重要 认真 快乐 努力 学习 阅读 写作 思考 讨论
解释 比较 选择 开始 结束 帮助 需要 喜欢 希望 相信 发现 记得 准备 参加 介绍 计算 设计 改进 分享 完成""".split()


def cache_root(override: str | None = None) -> Path:
    root = override or os.environ.get("TUNEWISE_BENCH_CACHE") or Path.home() / ".cache" / "tunewise-bench"
    return Path(root).expanduser()


def _publish(build, dest: Path) -> Path:
    """Run build(tmp_dir) and rename tmp_dir to dest; dest existing means a whole fixture (the rename is atomic)."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp's 0700 would stay on the published folder
        os.replace(tmp, dest)
    except OSError:  # another process published first: keep theirs
        if not dest.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def qwen_ranks(root: Path) -> bytes:
    """qwen.tiktoken (lines `base64token rank`), checked by hash; downloaded once as the dashscope wheel."""
    def fetch(tmp: Path):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(tmp)],
                       check=True)
        wheel = next(tmp.glob("dashscope-*.whl"))
        data = zipfile.ZipFile(wheel).read(RANKS_IN_WHEEL)
        (tmp / "qwen.tiktoken").write_bytes(data)
        wheel.unlink()

    data = (_publish(fetch, root / "_sources") / "qwen.tiktoken").read_bytes()
    if hashlib.sha256(data).hexdigest() != RANKS_SHA256:
        raise SystemExit(f"{root / '_sources'}: qwen.tiktoken does not have the expected sha256; delete the folder")
    return data


def build_tokenizer(root: Path) -> Path:
    def build(tmp: Path):
        from transformers import Qwen2Tokenizer
        from transformers.convert_slow_tokenizer import TikTokenConverter

        ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in
                                                                     qwen_ranks(root).splitlines() if line)}

        class RanksConverter(TikTokenConverter):  # the ranks are in memory: no tiktoken package, no file URL
            @staticmethod
            def load_tiktoken_bpe(_url):
                return ranks

        vocab, merges = RanksConverter(vocab_file="qwen.tiktoken").extract_vocab_merges_from_model("qwen.tiktoken")
        vocab.update({token: len(ranks) + i for i, token in enumerate(SPECIALS)})  # fixed ids, not append order
        tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                             pad_token="<|endoftext|>", model_max_length=131072)
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = QWEN25_TEMPLATE
        check_tokenizer(tok)
        tok.save_pretrained(tmp)

    return _publish(build, root / "tokenizer-qwen2.5")


def check_tokenizer(tok) -> None:
    """Vocabulary size, special ids, known Qwen2 ids, and English + Chinese round trips."""
    assert len(tok) == 151646, len(tok)
    assert tok.convert_tokens_to_ids(list(SPECIALS)) == [151643, 151644, 151645]
    assert tok("Hello world")["input_ids"] == [9707, 1879]  # as Qwen/Qwen2.5-0.5B-Instruct tokenizes it
    assert tok("<|im_start|>user\n")["input_ids"] == [151644, 872, 198]
    for text in ("The quick brown fox jumps over 13 lazy dogs, doesn't it?\n\n  Indented.",
                 "你好，世界！今天天气很好，我们去公园散步吧。", "混合 mixed 文本 with émojis 🙂 and tabs\t."):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text, (text, tok.decode(ids))


def load_tokenizer(root: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_tokenizer(root))


def build_model(name: str, root: Path, seed: int = SEED) -> Path:
    if name not in SHAPES:
        raise SystemExit(f"--model {name}: expected one of {', '.join(SHAPES)}")

    def build(tmp: Path):
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        dtype = getattr(torch, DTYPES[name])
        config = Qwen2Config(**COMMON, **SHAPES[name], dtype=DTYPES[name])
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # 7B is created in bfloat16 directly: a float32 copy would not fit
        try:
            model = Qwen2ForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        model.generation_config.eos_token_id = [151645, 151643]
        model.save_pretrained(tmp)
        load_tokenizer(root).save_pretrained(tmp)
        params = sum(p.numel() for p in model.parameters())
        (tmp / "fixture.json").write_text(json.dumps({
            "shape": name, "seed": seed, "parameters": params, "dtype": DTYPES[name],
            "note": "random init, Qwen2.5 shape and tokenizer; not Qwen's weights"}, indent=1) + "\n")

    return _publish(build, root / name)


# -- data -------------------------------------------------------------------------------------------------------

def _words(rng: random.Random, lang: str, count: int) -> list[str]:
    """count pieces of text that join into sentences: English with spaces, Chinese with ，。 and no spaces."""
    zh = lang == "zh"
    pool, out, left = (ZH_WORDS if zh else EN_WORDS), [], 0
    for _ in range(count):
        word = rng.choice(pool)
        if left == 0:
            left = rng.randint(4, 14)
            word = word if zh else word.capitalize()
        left -= 1
        stop, comma = ("。", "，") if zh else (".", ",")
        end = stop if left == 0 else (comma if rng.random() < 0.1 else "")
        out.append(word + end + ("" if zh else " "))
    return out


def _fill(tok, rng: random.Random, lang: str, budget: int) -> str:
    """Text of at most `budget` tokens (usually exactly, or a token or two under)."""
    pieces = _words(rng, lang, budget + 8)  # a piece is at least one token: enough to cover the budget

    def count(k: int) -> int:
        return len(tok("".join(pieces[:k]).rstrip(), add_special_tokens=False)["input_ids"])

    lo, hi = 1, len(pieces)  # the longest prefix within budget, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid - 1)
    return "".join(pieces[:lo]).rstrip()


def rendered_length(tok, messages: list[dict]) -> int:
    """Tokens of the whole rendered conversation (system prompt included): what a run trains on, unpadded."""
    return len(tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def make_rows(tok, rows: int, seed: int = SEED, shortest: int = 16, longest: int = 1024) -> list[dict]:
    """Rows whose rendered lengths are log-uniform over [shortest, longest]; half English, half Chinese. The default
    system prompt and the turn markers take ~30 tokens, so `shortest` is raised to the least a row can render to."""
    rng = random.Random(seed)
    empty = [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    overhead = rendered_length(tok, empty)
    shortest = max(shortest, overhead + 2)
    out = []
    for i in range(rows):
        target = round(math.exp(rng.uniform(math.log(shortest), math.log(longest))))
        lang = "zh" if i % 2 else "en"
        budget = target - overhead
        user = _fill(tok, rng, lang, max(1, round(budget * rng.uniform(0.2, 0.6))))
        reply_budget = max(1, budget - len(tok(user, add_special_tokens=False)["input_ids"]))
        reply = _fill(tok, rng, lang, reply_budget)
        out.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
    return out


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", help="fixture folder (default: $TUNEWISE_BENCH_CACHE or ~/.cache/tunewise-bench)")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a model fixture when missing; print its folder")
    b.add_argument("--model", default="0.5B-4L", choices=list(SHAPES))
    d = sub.add_parser("data", help="write the synthetic chat rows (JSONL, messages format)")
    d.add_argument("--rows", type=int, default=256)
    d.add_argument("--seed", type=int, default=SEED)
    d.add_argument("--longest", type=int, default=1024, help="longest rendered row in tokens")
    d.add_argument("--out", required=True)
    sub.add_parser("tokenizer", help="build the tokenizer when missing; print its folder")
    args = parser.parse_args(argv)
    root = cache_root(args.cache)
    if args.command == "build":
        print(build_model(args.model, root))
    elif args.command == "tokenizer":
        check_tokenizer(load_tokenizer(root))  # the saved copy, reloaded, passes the same checks
        print(build_tokenizer(root))
    else:
        tok = load_tokenizer(root)
        rows = make_rows(tok, args.rows, args.seed, longest=args.longest)
        write_rows(Path(args.out), rows)
        lengths = sorted(rendered_length(tok, r["messages"]) for r in rows)
        print(f"{args.out}: {len(rows)} rows, rendered tokens min {lengths[0]}, median "
              f"{statistics.median(lengths):g}, max {lengths[-1]}, total {sum(lengths)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
