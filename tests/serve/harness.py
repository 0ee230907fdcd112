"""What the serve tests share: a LoRA checkpoint maker, the chat helper, constants (the fixtures are in conftest.py)."""
import json
import socket

KEY = "sk-test-tunewise"
Q = [{"role": "user", "content": "你是谁？"}]
PROMPTS = ["你是谁？", "Who are you?", "Please introduce yourself.", "hello"]
MAX_TOKENS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_adapter(run_dir, seed=0):
    """A LoRA checkpoint in a run directory, as `tunewise sft` leaves it (args.json beside checkpoint-N/), with
    random non-zero weights so that it answers differently from the base model."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    base = resolve_model("tunewise-tiny")
    torch.manual_seed(seed)
    model = get_peft_model(load_model(base), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                                        init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    ckpt = run_dir / "checkpoint-1"
    model.save_pretrained(ckpt)
    load_tokenizer(base).save_pretrained(ckpt)
    (run_dir / "args.json").write_text(json.dumps({"command": "sft", "args": {"model": "tunewise-tiny", "system": None}}))
    return ckpt.resolve()


def ask(client, prompt, model="tunewise-tiny", **kw):
    kw.setdefault("max_tokens", MAX_TOKENS)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **kw)


def hf_reference():
    """The embedded model and its tokenizer loaded by transformers alone (no tunewise code): the independent
    reference the served logprobs and raw-text continuations are checked against."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.models.load import resolve_model

    path = resolve_model("tunewise-tiny")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return SimpleNamespace(model=model, tok=AutoTokenizer.from_pretrained(path),
                           eos=set(model.generation_config.eos_token_id))


def hf_greedy(hf, ids: list[int], max_tokens: int):
    """Greedy continuation by full forward passes (no cache, no batching): (new ids, log_softmax of the raw logits
    at each step, [n, vocab]). On one torch thread: beside the server process two threads spin (16 steps took 6-15 s
    on 2 busy cores, 0.4 s on one)."""
    import torch

    out, rows, threads = [], [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for _ in range(max_tokens):
                row = hf.model(torch.tensor([ids + out])).logits[0, -1].float().log_softmax(-1)
                rows.append(row)
                out.append(int(row.argmax()))
                if out[-1] in hf.eos:
                    break
    finally:
        torch.set_num_threads(threads)
    return out, torch.stack(rows)
