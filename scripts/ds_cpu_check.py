"""DeepSpeed ZeRO on CPU (gloo) with the HF Trainer, and the logged LR checked step by step against the plan.

Launch with 2 CPU processes (DeepSpeed picks its CPU accelerator and, without oneCCL installed, the gloo backend):

    DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 scripts/ds_cpu_check.py --stage 3 --mode bug
    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 scripts/ds_cpu_check.py --stage 2 --mode flags   # also works
    DS_ACCELERATOR=cpu python scripts/ds_cpu_check.py --stage 2 --mode flags                   # one process

Findings on a 2-core CPU machine (transformers 5.23, accelerate 1.15, deepspeed 0.19.8, torch 2.13 CPU):
* ZeRO-2, ZeRO-3 and ZeRO-3 offload train with the HF AdamW (no "optimizer" block: nothing to compile except
  deepspeed's shm comm op, JIT-built once, ~1.5 min). An "optimizer" block makes deepspeed JIT-build its CPU
  fused_adam op (~2.5 min once).
* accelerate needs its state built with backend="gloo" first (see --no_state_fix), and a one-process run needs
  RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT (this script sets them when no launcher did).

--mode
  plain  built-in zeroN config through tunewise.plan.deepspeed.reconcile; expected curve = plan.LRSchedule
  bug    zeroN + the issue's {"scheduler": WarmupLR auto} block passed to the Trainer as is (what other tools do);
         the logged LR is compared with both the flags' cosine plan and the WarmupLR curve
  flags  same JSON through reconcile(keep_scheduler=False): block removed; expected = plan.LRSchedule
  keep   same JSON through reconcile(keep_scheduler=True); expected = DeepSpeedSchedule (the JSON's real curve)
  dsopt  zeroN + an "optimizer": AdamW auto block passed as is (DeepSpeed builds the optimizer and steps the HF
         cosine scheduler itself); expected = plan.LRSchedule.optimizer_lr_at (the one-step shift)
--scheduler warmuplr|warmupdecay|warmupcosine  the JSON scheduler block of bug/flags/keep (default warmuplr)
--offload  use zero3_offload (stage 3 only)

Rank 0 prints one line per step (logged LR, optimizer LR, expected, relative error, step time) and a summary, and
writes it to --out/result.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCHED_BLOCKS = {
    "warmuplr": {"type": "WarmupLR",
                 "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto"}},
    "warmupdecay": {"type": "WarmupDecayLR",
                    "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto",
                               "total_num_steps": "auto", "warmup_type": "linear"}},
    "warmupcosine": {"type": "WarmupCosineLR", "params": {"total_num_steps": "auto", "warmup_num_steps": "auto"}},
}
OPT_BLOCK = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--stage", type=int, choices=(2, 3), default=3)
    p.add_argument("--mode", choices=("plain", "bug", "flags", "keep", "dsopt"), default="flags")
    p.add_argument("--scheduler", choices=sorted(SCHED_BLOCKS), default="warmuplr")
    p.add_argument("--offload", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup_ratio", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--out", default="/tmp/ds_cpu_check")
    p.add_argument("--no_state_fix", action="store_true",
                   help="let TrainingArguments build accelerate's state itself (on CPU it then sees world size 1)")
    p.add_argument("--local_rank", type=int, default=-1)  # the deepspeed launcher passes it
    a = p.parse_args()
    if "WORLD_SIZE" not in os.environ:  # plain `python script.py`: a one-process group (else deepspeed tries MPI)
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", "29533"))
    if not a.no_state_fix:
        # accelerate's PartialState, built by TrainingArguments for DeepSpeed, gets no backend on a machine without
        # an accelerator: it inits torch.distributed through deepspeed (gloo) but then reports num_processes = 1, so
        # HF fills train_batch_size for one process and shards no data. Building the state first with
        # backend="gloo" and telling TrainingArguments to use it gives world size 2 and DistributedType.DEEPSPEED.
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        from accelerate import PartialState

        PartialState(backend="gloo")

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from tunewise.plan.deepspeed import load_config, reconcile
    from tunewise.plan.schedule import lr_relative_error, make_schedule, resolve_warmup

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    name = "zero3_offload" if a.offload else f"zero{a.stage}"
    warmup = resolve_warmup(a.steps, a.warmup_ratio)
    plan = make_schedule("cosine", a.lr, a.steps, warmup)
    flags = {"learning_rate": a.lr, "weight_decay": 0.0, "per_device_train_batch_size": a.batch,
             "gradient_accumulation_steps": a.accum, "max_grad_norm": 1.0, "torch_dtype": "float32",
             "lr_scheduler_type": "cosine"}
    raw, _ = load_config(name)
    if a.mode in ("bug", "flags", "keep"):
        raw["scheduler"] = SCHED_BLOCKS[a.scheduler]
    if a.mode == "dsopt":
        raw["optimizer"] = OPT_BLOCK
    os.makedirs(a.out, exist_ok=True)
    spec = os.path.join(a.out, f"ds_{name}_{a.mode}_{a.scheduler}.json")
    if rank == 0:  # written atomically; other ranks wait for it (no process group exists yet)
        with open(spec + ".tmp", "w") as f:
            json.dump(raw, f, indent=2)
        os.replace(spec + ".tmp", spec)
    while not os.path.exists(spec):
        time.sleep(0.05)

    expected, expected_alt, shift = plan, None, False
    if a.mode in ("bug", "dsopt"):
        config = raw  # straight to the Trainer, as tools without reconciliation do
        kwargs = plan.trainer_kwargs()
        if a.mode == "bug":
            expected_alt = reconcile(spec, flags, world, a.steps, warmup, keep_scheduler=True).schedule_override
        shift = a.mode == "dsopt"
    else:
        rec = reconcile(spec if a.mode != "plain" else name, flags, world, a.steps, warmup, a.mode == "keep")
        if rank == 0:
            for w in rec.warnings:
                print("WARNING:", w, flush=True)
        config = rec.config
        expected = rec.schedule_override or plan
        kwargs = expected.trainer_kwargs()

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=128, vocab_size=256))
    n = a.steps * a.batch * a.accum * world
    g = torch.Generator().manual_seed(1)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 256, (n, a.seq), generator=g)]

    rows, times = [], {}

    class Record(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            times[state.global_step + 1] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times[state.global_step] = time.perf_counter() - times[state.global_step]

        def on_log(self, args, state, control, logs=None, optimizer=None, **kw):
            if logs and "learning_rate" in logs:
                lr = optimizer.param_groups[0]["lr"]
                rows.append((state.global_step, logs["learning_rate"], lr, logs.get("loss")))

    targs = TrainingArguments(
        output_dir=os.path.join(a.out, "trainer"), deepspeed=config, per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=a.accum, max_grad_norm=1.0, weight_decay=0.0, logging_steps=1,
        save_strategy="no", report_to=[], disable_tqdm=True, dataloader_drop_last=True, seed=0,
        accelerator_config=None if a.no_state_fix else {"use_configured_state": True}, **kwargs)
    t0 = time.perf_counter()
    trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=[Record()])
    trainer.train()
    total = time.perf_counter() - t0
    if rank != 0:
        return 0

    lr_fn = expected.optimizer_lr_at if shift else expected.lr_at
    worst, worst_alt = 0.0, 0.0
    print(f"\n{'step':>4} {'logged lr':>12} {'optimizer lr':>12} {'expected':>12} {'rel err':>9} "
          + (f"{'WarmupLR':>12} " if expected_alt else "") + f"{'loss':>7} {'step s':>7}")
    for step, logged, opt_lr, loss in rows:
        want = lr_fn(step)
        err = lr_relative_error(logged, want, floor=a.lr)
        worst = max(worst, err)
        line = f"{step:>4} {logged:>12.6g} {opt_lr:>12.6g} {want:>12.6g} {err:>9.2e} "
        if expected_alt:
            alt = expected_alt.lr_at(step)
            worst_alt = max(worst_alt, lr_relative_error(logged, alt, floor=a.lr))
            line += f"{alt:>12.6g} "
        print(line + f"{loss if loss is not None else float('nan'):>7.3f} {times.get(step, float('nan')):>7.3f}")
    step_times = sorted(v for k, v in times.items() if k > 1)
    median = step_times[len(step_times) // 2] if step_times else float("nan")
    result = {"stage": a.stage, "offload": a.offload, "mode": a.mode, "scheduler_block": a.scheduler,
              "world_size": world, "backend": torch.distributed.get_backend() if torch.distributed.is_initialized()
              else None, "expected": type(expected).__name__ + (".optimizer_lr_at" if shift else ".lr_at"),
              "max_rel_err": worst, "max_rel_err_vs_json_warmuplr": worst_alt if expected_alt else None,
              "steps_logged": len(rows), "median_step_s": median, "train_s": total, "rows": rows}
    print(f"\nsummary: stage {a.stage}{' offload' if a.offload else ''}, mode {a.mode}, backend "
          f"{result['backend']}, world {world}: max relative error vs {result['expected']} = {worst:.3g}"
          + (f"; vs the JSON's WarmupLR curve = {worst_alt:.3g}" if expected_alt else "")
          + f"; median step {median * 1000:.1f} ms; train() {total:.1f} s")
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
