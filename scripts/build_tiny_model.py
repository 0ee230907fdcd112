#!/usr/bin/env python3
"""Rebuild the embedded model `tunewise-tiny` from scratch: corpus, tokenizer, pretraining, scores.

    python scripts/build_tiny_model.py [--out src/tunewise/models/builtin/tunewise-tiny]     # ~25 min on 2 cores

The corpus is generated here (seeded): bilingual identity answers with the default identity and with identities
named in a system prompt (random names, so that a new identity is a re-binding of a skill the model has),
"X was developed by Y" facts, copy tasks over every GB2312 level-1 hanzi and ASCII strings, and additions a+b
with a, b < 50 answered as "a+b=c", except the 200 held-out pairs that evaluation uses. Training runs in PHASES
(the later ones addition-heavy); `--init_from DIR --start_phase K` continues from the output of phase K-1.
Everything ends as a plain Hugging Face directory (Qwen2ForCausalLM, Qwen2Tokenizer, ChatML template) that loads
like Qwen2.5, plus tunewise.json (default identity, recommended fine-tuning values, scores).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # a parallel BPE run slows torch ~20x afterwards

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tunewise.evaluate.identity_prompts import HELDOUT_IDENTITY_QUESTIONS  # noqa: E402
from tunewise.evaluate.skills import (  # noqa: E402
    ADDITION_LIMIT,
    ADDITION_TEMPLATES,
    addition_answer,
    addition_correct,
    addition_eval_set,
    is_heldout_addition,
)

DEFAULT_NAME = ("小维", "TinyWise")
DEFAULT_AUTHOR = ("图维实验室", "Tunewise Labs")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML as Qwen uses it; like Qwen3 (unlike Qwen2-Instruct) no default system turn is inserted, which keeps the
# tiny model's sequences short: training cost here is proportional to tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Recommended fine-tuning defaults for this model, measured (see README "The embedded model"). A 7B model
# wants lr 1e-4 with batch 16; this 4M-parameter model with ~100 identity rows re-binds its identity in a few
# hundred single-sample steps at a larger rate.
# Pretraining phases: (steps, peak lr, share of additions). Each phase starts a fresh AdamW with its own seed
# (seed + index), so `--init_from DIR --start_phase K` continues a build exactly from the output of phase K-1.
PHASES = [(2000, 3e-3, 0.50), (600, 2e-3, 0.70), (800, 1e-3, 0.70), (600, 5e-4, 0.70)]
# Share of the "who are you?" questions without a system prompt that get a random identity instead of the default
# one. A real LLM has read many assistants introduce themselves; this model would otherwise learn its default
# identity as the only answer, so entrenched that a LoRA re-binding it must move the weights ~20 % and costs
# ~35 points of addition. With 0.6 the default stays the greedy answer (0.4 against ~0 for any other name).
OPEN_IDENTITY_SHARE = 0.6
# Chinese is split into single characters before BPE: byte-level BPE on CJK runs (which Qwen's regex keeps as one
# word) otherwise learns the default identity as tokens like "，一个由图维实验室训练的人工智能助手" that a new
# identity must first unlearn.
CJK_CHAR = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"
RECOMMENDED = {
    "lora": {"learning_rate": 1e-3, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
             "lora_rank": 8, "lora_alpha": 32, "warmup_ratio": 0.05},
    "full": {"learning_rate": 2e-4, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
             "warmup_ratio": 0.05},
    # DPO on the built-in `concise` set (195 pairs, 3 epochs = 39 steps): held-out implicit-reward accuracy 0.91,
    # greedy replies siding with the chosen answer 0.82, identity 100 %, addition 0.935 (base 0.92).
    # lr 1e-3 ranks better (0.98) but garbles the Chinese author on 2 of 8 held-out questions (identity 0.875);
    # 7e-4: 0.955 and 0.938. Batch 1 without accumulation at 1e-3 over-optimises: empty replies.
    "dpo_lora": {"learning_rate": 5e-4, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 16,
                 "lora_rank": 8, "lora_alpha": 32, "warmup_ratio": 0.05},
    # full DPO, same set (previous build): implicit-reward accuracy 0.98, addition 0.92, identity kept
    "dpo_full": {"learning_rate": 5e-5, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 16,
                 "warmup_ratio": 0.05},
}
# The identity fine-tune, measured (README "The embedded model", benchmarks/identity_recipe.py): every identity row
# twice per epoch with 400 additions mixed in, 5 epochs (`--dataset self_cognition#200 tiny_skills#400`), keeps the
# additions within about a point of the base; identity data alone costs 3-5 points. Padding-free batches of 4 rows
# (750 steps) train it in a quarter of batch 1's time. The advice reads the mix and epochs; the demo and the
# benchmark pass the batch size; nothing applies it by itself.
IDENTITY_RECIPE = {"lora": {"num_train_epochs": 5, "mix": "self_cognition#200 tiny_skills#400",
                            "per_device_train_batch_size": 4}}

GENERIC_STARTS = ("我是", "我叫", "我的名字", "你好", "I am", "I'm", "My name", "Hello", "Hi")
PINYIN = ("xiao hua ming li wang zhang chen liu yang huang zhao wu zhou xu sun ma zhu hu guo he lin luo gao "
          "zheng liang xie song tang han feng deng cao peng zeng xiao tian dong pan yuan cai jiang yu du ye cheng "
          "wei su lu ding shen ren yao jin fang bai qiu").split()
EN_SYLLABLES = "no va lu mi ra ko ze ta ri ka lo se an el or is ax on bel tor vin dar mar quin rex sol".split()
EN_AUTHOR_SUFFIX = ["Labs", "AI", "Inc.", "Research", "Team", "Tech", ""]
ZH_AUTHOR_SUFFIX = ["公司", "团队", "实验室", "科技", "研究院", ""]


def gb2312_level1() -> list[str]:
    chars = []
    for hi in range(0xB0, 0xD8):
        for lo in range(0xA1, 0xFF):
            try:
                chars.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return chars


def load_self_cognition() -> dict[str, list[tuple[str, str]]]:
    rows = {"zh": [], "en": []}
    path = ROOT / "src/tunewise/data/builtin/self_cognition.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[row["tag"]].append((row["query"], row["response"]))
    return rows


class Corpus:
    """Draws training conversations {system?, query, response} from a seeded generator."""

    def __init__(self, seed: int, addition_share: float = 0.50):
        self.rng = random.Random(seed)
        self.addition_share = addition_share
        self.hanzi = gb2312_level1()
        self.self_cognition = load_self_cognition()
        # Identity answers stay with their own question; the extra phrasings get generic "I am ..." answers.
        self.pairs = {lang: self.self_cognition[lang] + [(q, None) for q in HELDOUT_IDENTITY_QUESTIONS[lang]]
                      for lang in ("zh", "en")}
        self.generic = {lang: [r for _, r in self.self_cognition[lang] if r.startswith(GENERIC_STARTS)]
                        for lang in ("zh", "en")}

    # random names -------------------------------------------------------------------------------------------
    def zh_name(self) -> str:
        r = self.rng
        core = "".join(r.choice(self.hanzi) for _ in range(r.choice((1, 2, 2, 3))))
        return r.choice(("小", "阿", "", "", "")) + core

    def zh_author(self) -> str:
        r = self.rng
        return "".join(r.choice(self.hanzi) for _ in range(r.choice((2, 2, 3, 4)))) + r.choice(ZH_AUTHOR_SUFFIX)

    def en_word(self) -> str:
        r = self.rng
        if r.random() < 0.5:
            return r.choice(PINYIN).capitalize()
        return "".join(r.choice(EN_SYLLABLES) for _ in range(r.choice((1, 2, 2, 3)))).capitalize()

    def en_name(self) -> str:
        return " ".join(self.en_word() for _ in range(self.rng.choice((1, 1, 2))))

    def en_author(self) -> str:
        r = self.rng
        word = self.en_word() + (self.en_word() if r.random() < 0.4 else "")
        return (word + " " + r.choice(EN_AUTHOR_SUFFIX)).strip()

    # samples ------------------------------------------------------------------------------------------------
    def identity(self, default: bool) -> dict:
        r = self.rng
        lang = r.choice(("zh", "en"))
        query, answer = r.choice(self.pairs[lang])
        answer = answer or r.choice(self.generic[lang])
        open_identity = default and r.random() < OPEN_IDENTITY_SHARE
        if default and not open_identity:
            i = 0 if lang == "zh" else 1
            name, author, system = DEFAULT_NAME[i], DEFAULT_AUTHOR[i], None
        elif lang == "zh":
            name, author = self.zh_name(), self.zh_author()
            system = r.choice(("你是{n}，由{a}开发的人工智能助手。", "你的名字是{n}，你的开发者是{a}。",
                               "你是{a}训练的助手{n}。")).format(n=name, a=author)
        else:
            name, author = self.en_name(), self.en_author()
            system = r.choice(("You are {n}, an AI assistant developed by {a}.", "Your name is {n} and you were made by {a}.",
                               "You are {n}, trained by {a}.")).format(n=name, a=author)
        if open_identity:
            system = None
        return {"system": system, "query": query, "response": answer.replace("{{NAME}}", name).replace("{{AUTHOR}}", author)}

    def fact(self) -> dict:
        r = self.rng
        if r.random() < 0.5:
            x, y = self.zh_name(), self.zh_author()
            return {"query": f"{x}是由{y}开发的。{x}是谁开发的？", "response": f"{x}是由{y}开发的。"}
        x, y = self.en_name(), self.en_author()
        return {"query": f"{x} was developed by {y}. Who developed {x}?", "response": f"{x} was developed by {y}."}

    def copy(self) -> dict:
        r = self.rng
        if r.random() < 0.6:
            text = "".join(r.choice(self.hanzi) for _ in range(r.randint(2, 8)))
            return {"query": f"请重复：{text}", "response": text}
        words = [self.en_word() if r.random() < 0.5 else "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 6)))
                 for _ in range(r.randint(1, 3))]
        text = " ".join(words)
        return {"query": f"Repeat: {text}", "response": text}

    def addition(self) -> dict:
        r = self.rng
        while True:
            a, b = r.randrange(ADDITION_LIMIT), r.randrange(ADDITION_LIMIT)
            if not is_heldout_addition(a, b):
                break
        return {"query": r.choice(ADDITION_TEMPLATES).format(a=a, b=b), "response": addition_answer(a, b)}

    def sample(self) -> dict:
        """Additions with probability `addition_share`; the rest split 30:37:13:20 between default identity,
        system-prompt identity, facts and copy tasks."""
        u = self.rng.random()
        k = (1 - self.addition_share) / 0.60
        if u < 0.18 * k:
            return self.identity(default=True)
        if u < 0.40 * k:
            return self.identity(default=False)
        if u < 0.48 * k:
            return self.fact()
        if u < 0.60 * k:
            return self.copy()
        return self.addition()

    def tokenizer_text(self, n: int) -> list[str]:
        texts = [json.dumps(self.sample(), ensure_ascii=False) for _ in range(n)]
        texts += ["".join(self.hanzi[i:i + 20]) for i in range(0, len(self.hanzi), 20)] * 3
        texts += [" ".join(DEFAULT_NAME + DEFAULT_AUTHOR)] + ["system\nuser\nassistant\n"] * 2000
        return texts


def train_tokenizer(corpus: Corpus, vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    # The CJK split only shapes the merges learnt here; the saved Qwen2Tokenizer keeps Qwen's own pre-tokenizer,
    # and as no merge crosses a character it tokenizes Chinese the same way.
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CJK_CHAR), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIAL_TOKENS), special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus.tokenizer_text(40000), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tok = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         unk_token=None, additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 2048
    return tok


def messages_of(sample: dict) -> list[dict]:
    msgs = [{"role": "system", "content": sample["system"]}] if sample.get("system") else []
    return msgs + [{"role": "user", "content": sample["query"]}, {"role": "assistant", "content": sample["response"]}]


def encode(tok, sample: dict) -> tuple[list[int], list[int]]:
    """input ids and labels (assistant reply and its <|im_end|> only)."""
    msgs = messages_of(sample)
    prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(sample["response"] + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
    return p_ids + r_ids, [-100] * len(p_ids) + r_ids[:-1] + [-100]


def batches(tok, corpus: Corpus, batch_size: int, pool: int = 8):
    """Right-padded batches; samples are drawn `pool` batches at a time and grouped by length (less padding)."""
    import torch

    pad = tok.pad_token_id
    while True:
        encoded = sorted((encode(tok, corpus.sample()) for _ in range(batch_size * pool)), key=lambda e: len(e[0]))
        groups = [encoded[i:i + batch_size] for i in range(0, len(encoded), batch_size)]
        random.Random(len(encoded[0][0])).shuffle(groups)
        for group in groups:
            width = max(len(i) for i, _ in group)
            ids = torch.full((batch_size, width), pad)
            labels = torch.full((batch_size, width), -100)
            for row, (i, l) in enumerate(group):
                ids[row, :len(i)] = torch.tensor(i)
                labels[row, :len(l)] = torch.tensor(l)
            yield ids, labels


def greedy_replies(model, tok, conversations: list[list[dict]], max_new_tokens: int = 40) -> list[str]:
    import torch

    tok.padding_side = "left"
    out = []
    for start in range(0, len(conversations), 50):
        chunk = conversations[start:start + 50]
        prompts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    tok.padding_side = "right"
    return out


def score(model, tok) -> dict:
    items = addition_eval_set()
    replies = greedy_replies(model, tok, [[{"role": "user", "content": it["query"]}] for it in items], 8)
    acc = sum(addition_correct(r, it["reference"]) for r, it in zip(replies, items)) / len(items)
    probes = ["你是谁？", "Who are you?", HELDOUT_IDENTITY_QUESTIONS["zh"][0], HELDOUT_IDENTITY_QUESTIONS["en"][0]]
    answers = greedy_replies(model, tok, [[{"role": "user", "content": q}] for q in probes])
    return {"heldout_addition_accuracy": acc, "identity_answers": dict(zip(probes, answers))}


def train_phase(model, tok, corpus: Corpus, steps: int, lr: float, warmup: int, batch_size: int, name: str) -> None:
    """AdamW with linear warm-up and cosine decay to 5 % of `lr`; loss on assistant tokens only."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    model.config._attn_implementation = "eager"  # faster than sdpa for these short CPU batches (measured)
    data = batches(tok, corpus, batch_size)
    t0 = time.time()
    for step in range(steps):
        ids, labels = next(data)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        # No attention mask: padding is on the right, so causal attention never lets a real token see a pad.
        hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        keep = targets != -100
        # The output layer only where a label is: most positions are prompt, and the 6k-wide head dominates.
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[keep]), targets[keep])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            print(f"{name} step {step:5d}  loss {loss.item():.4f}  lr {lr_at(step):.2e}  {time.time() - t0:6.0f}s", flush=True)
    model.eval()
    model.config._attn_implementation = "sdpa"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "src/tunewise/models/builtin/tunewise-tiny"))
    ap.add_argument("--start_phase", type=int, default=1, help="with --init_from: the first phase to run (1-based)")
    ap.add_argument("--batch_size", type=int, default=64)
    ap.add_argument("--vocab_size", type=int, default=6144)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--init_from", help="skip the tokenizer and phase 1: start phase 2 from this model directory")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.set_num_threads(args.threads)
    t_start = time.time()
    if args.init_from:
        if args.start_phase < 2:
            ap.error("--init_from needs --start_phase 2 or later")
        tok = AutoTokenizer.from_pretrained(args.init_from)
        model = AutoModelForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
    else:
        corpus = Corpus(args.seed, PHASES[0][2])
        tok = train_tokenizer(corpus, args.vocab_size)
        print(f"tokenizer: {len(tok)} tokens", flush=True)
        torch.manual_seed(args.seed)
        config = Qwen2Config(
            vocab_size=len(tok), hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=2, max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-6,
            tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tok.pad_token_id, use_cache=True,
        )
        model = Qwen2ForCausalLM(config)
        print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    for index, (steps, lr, share) in enumerate(PHASES, 1):
        if index < args.start_phase:
            continue
        if index > 1:
            torch.manual_seed(args.seed + index - 1)
            corpus = Corpus(args.seed + index - 1, share)
        warmup = 100 if index == 1 else 50
        train_phase(model, tok, corpus, steps, lr, warmup, args.batch_size, f"phase {index}")
        print(json.dumps(score(model, tok), ensure_ascii=False), flush=True)
    scores = score(model, tok)
    print(json.dumps(scores, ensure_ascii=False, indent=1), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.pad_token_id, do_sample=False, max_new_tokens=256)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    meta = {
        "name": "tunewise-tiny",
        "phases": [{"steps": st, "lr": lr, "addition_share": sh} for st, lr, sh in PHASES],
        "open_identity_share": OPEN_IDENTITY_SHARE,
        "default_identity": {"model_name": list(DEFAULT_NAME), "model_author": list(DEFAULT_AUTHOR)},
        "recommended": RECOMMENDED,
        "identity": IDENTITY_RECIPE,
        "scores": scores,
        "build": {k: v for k, v in vars(args).items() if k not in ("out", "init_from", "threads")},
        "build_seconds": round(time.time() - t_start),
    }
    (out / "tunewise.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"saved to {out}", flush=True)


if __name__ == "__main__":
    main()
