"""Batched greedy replies for scoring many prompts at once (left padding, stop at end-of-turn)."""
from __future__ import annotations


def greedy_replies(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 64,
                   system: str | None = None, batch_size: int = 50) -> list[str]:
    import torch

    from tunewise.data.encode import with_system
    from tunewise.models.load import end_of_turn_ids

    stop = end_of_turn_ids(tokenizer)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    replies = []
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start:start + batch_size]
            prompts = [tokenizer.apply_chat_template(with_system(m, system), tokenize=False, add_generation_prompt=True)
                       for m in chunk]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stop,
                                     pad_token_id=tokenizer.pad_token_id)
            replies += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return replies
