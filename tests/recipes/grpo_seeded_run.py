"""A GRPO run built as `tunewise rlhf --rlhf_type grpo` builds it (the flags parsed and planned, the trainer from
tunewise.train.build with the run's process group, logging.jsonl and completions.jsonl), except that each completion
is sampled from the policy with a random generator of its own, seeded by its prompt, its place in the prompt's group
and the step (TRL's rollout_func hook), so that any split of a generation round over processes and micro-batches
samples the same completions. The LoRA weights are saved at the end. For tests/recipes/test_grpo_parallel.py.

    [python -m torch.distributed.run --nproc_per_node 2] grpo_seeded_run.py OUT_DIR TUNEWISE_GRPO_FLAGS...
"""
import sys
import zlib
from pathlib import Path

import torch


def seeded_rollout(prompts, trainer):
    """TRL's rollout_func: prompt and completion token ids for this process's prompts (each repeated once per
    completion of its group), sampled token by token at the trainer's temperature."""
    tok = trainer.processing_class
    model = trainer.accelerator.unwrap_model(trainer.model)
    stop = set(trainer.eos_token_ids)
    places: dict[str, int] = {}
    prompt_ids, completion_ids = [], []
    for prompt in prompts:
        text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        place = places[text] = places.get(text, -1) + 1
        generator = torch.Generator().manual_seed(zlib.crc32(f"{text}|{place}|{trainer.state.global_step}".encode()))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        new = []
        with torch.no_grad():
            for _ in range(trainer.max_completion_length):
                logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1].float()
                token = torch.multinomial(torch.softmax(logits / trainer.temperature, -1), 1, generator=generator)
                new.append(int(token))
                if new[-1] in stop:
                    break
        prompt_ids.append(ids)
        completion_ids.append(new)
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


def main(out: str, flags: list[str]) -> None:
    from safetensors.torch import save_file

    from tunewise import ranks
    from tunewise.args import GrpoArgs
    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes.grpo import RECIPE
    from tunewise.train.build import build_trainer
    from tunewise.train.callbacks import MetricsLog
    from tunewise.train.completions import CompletionsLog

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    args, sources, _ = parse(GrpoArgs, [*flags, "--output_dir", str(out), "--report_to", "none"])
    run = resolve(RECIPE, args, sources)
    trainer = build_trainer(run, out, callbacks=[MetricsLog(out / "logging.jsonl", run.schedule),
                                                 CompletionsLog(out / "completions.jsonl")])
    trainer.rollout_func = seeded_rollout
    trainer.train()
    if ranks.is_main_process():
        model = trainer.accelerator.unwrap_model(trainer.model)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items() if "lora_" in k},
                  out / "adapter.safetensors")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
