#!/usr/bin/env python3
"""Training throughput side by side: tunewise, TRL's SFTTrainer (padded and padding-free), ms-swift when installed.

    .venv/bin/python benchmarks/train_throughput.py [--model 0.5B-4L] [--rounds 3] [--systems tunewise,trl,...]
        [--batch 4 --max_steps 8] [--extra 'tunewise=--padding_free false'] [--variant 'NAME=BASE ARGS']
        [--trl_data prompt-completion|messages|tokens] [--markdown FILE] [--json FILE]

All systems train the same LoRA (r 8, alpha 32, dropout 0.05, all-linear) in float32 on the same batch x max_steps
rows (from qwen_shape.py's synthetic chats), lr 1e-4 cosine with 1 warm-up step, weight decay 0.1, clipping 1.0, the
Trainer's AdamW, through transformers' Trainer with data_seed 42, hence the same batches (the per-step token counts
check it). TRL's defaults that change the work (gradient checkpointing, bf16 autocast) are off; --extra adds them.
Each run is its own process that times Trainer.train (wall, CPU of all threads) and records every micro-batch; the
parent adds the process's wall and CPU seconds and peak RSS (os.wait4). Rounds interleave the systems (A B C A B C)
so load drift spreads over all of them; the table gives the median over rounds (min-max).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 42
TRL_DATA = ("prompt-completion", "messages", "tokens")


@dataclass
class System:
    kind: str  # tunewise | trl | swift: which runner; args are CLI flags (tunewise, swift) or key=value (trl)
    args: list[str] = field(default_factory=list)


SYSTEMS = {"tunewise": System("tunewise"), "trl": System("trl"),
           "trl-padding-free": System("trl", ["padding_free=true"]), "swift": System("swift")}


def warmup(max_steps: int) -> int:
    return 1 if max_steps > 1 else 0  # tunewise refuses a warm-up that covers the whole run


def tunewise_args(model: Path, data: Path, out: Path, a) -> list[str]:
    return ["sft", "--model", str(model), "--dataset", str(data), "--train_type", "lora", "--lora_rank", "8",
            "--lora_alpha", "32", "--lora_dropout", "0.05", "--target_modules", "all-linear", "--learning_rate", "1e-4",
            "--lr_scheduler_type", "cosine", "--warmup_steps", str(warmup(a.max_steps)), "--weight_decay", "0.1",
            "--per_device_train_batch_size", str(a.batch), "--gradient_accumulation_steps", "1",  # tunewise's is 16
            "--max_steps", str(a.max_steps), "--max_length", str(a.max_length), "--output_dir", str(out),
            "--add_version", "false", "--report_to", "none", "--save_steps", "1000", "--logging_steps", "1",
            "--torch_dtype", "float32", "--seed", str(SEED)]


def swift_args(model: Path, data: Path, out: Path, a) -> list[str]:
    """ms-swift's flags are tunewise's; these differ by default there (held-out split, data shuffle)."""
    return tunewise_args(model, data, out, a)[1:] + ["--split_dataset_ratio", "0", "--dataset_shuffle", "false",
                                                     "--data_seed", str(SEED)]


# -- the child process: one training run --------------------------------------------------------------------------

def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _install_probe(result: Path) -> None:
    """Time Trainer.train and record each micro-batch, for whichever trainer the system builds."""
    import transformers

    stats: dict = {"steps": []}
    train, step = transformers.Trainer.train, transformers.Trainer.training_step

    def timed_train(self, *args, **kwargs):
        import torch

        stats["threads"] = torch.get_num_threads()
        t0, c0 = time.perf_counter(), _cpu_self()
        try:
            return train(self, *args, **kwargs)
        finally:
            stats.update(loop_s=time.perf_counter() - t0, loop_cpu_s=_cpu_self() - c0,
                         log_history=self.state.log_history)
            result.write_text(json.dumps(stats))

    def recorded_step(self, model, inputs, *args, **kwargs):
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        stats["steps"].append({"shape": list(ids.shape), "labels": int((inputs["labels"] != -100).sum()),
                               "tokens": int(mask.sum()) if mask is not None else ids.numel()})  # padding-free: all
        return step(self, model, inputs, *args, **kwargs)

    transformers.Trainer.train, transformers.Trainer.training_step = timed_train, recorded_step


def run_trl(spec: dict) -> None:
    """TRL's SFTTrainer on the same rows, model, LoRA and schedule as tunewise; spec["args"] are SFTConfig
    overrides (key=value, JSON values) plus data=prompt-completion|messages|tokens; spec["dtype"] the weights' dtype
    (default float32)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    overrides = {}
    for item in spec["args"]:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    mode = overrides.pop("data", spec["trl_data"])
    convs = [json.loads(line)["messages"] for line in Path(spec["data"]).read_text(encoding="utf-8").splitlines()]
    tok = AutoTokenizer.from_pretrained(spec["model"])
    if mode == "prompt-completion":  # labels: the reply, <|im_end|> and the "\n" after it
        rows = [{"prompt": m[:-1], "completion": m[-1:]} for m in convs]
    elif mode == "messages":  # TRL swaps in its {% generation %} Qwen2.5 template: also labels "\n" before the reply
        rows = [{"messages": m} for m in convs]
        overrides.setdefault("assistant_only_loss", True)
    elif mode == "tokens":  # tunewise's own input_ids and labels, so both train on exactly the same labels
        from tunewise.data.encode import encode_conversation

        rows = [dict(zip(("input_ids", "labels"), encode_conversation(tok, m), strict=True)) for m in convs]
    else:
        raise SystemExit(f"trl data={mode}: expected one of {', '.join(TRL_DATA)}")
    padding_free = overrides.get("padding_free", False)
    settings = dict(
        output_dir=spec["out"], per_device_train_batch_size=spec["batch"], gradient_accumulation_steps=1,
        max_steps=spec["max_steps"], learning_rate=1e-4, lr_scheduler_type="cosine",
        warmup_steps=warmup(spec["max_steps"]), weight_decay=0.1, max_grad_norm=1.0, logging_steps=1,
        logging_first_step=True, save_strategy="no", report_to="none", seed=SEED, data_seed=SEED, bf16=False,
        fp16=False, gradient_checkpointing=False, use_cpu=not torch.cuda.is_available(), dataloader_pin_memory=False,
        include_num_input_tokens_seen="non_padding",  # as tunewise
        max_length=None if padding_free else spec["max_length"])  # TRL refuses max_length with padding-free
    config = SFTConfig(**{**settings, **overrides})
    set_seed(SEED)  # as tunewise: seeded right before the model and LoRA, so both draw the same LoRA A matrices
    dtype = getattr(torch, spec.get("dtype", "float32"))  # gpu_bench.py: bfloat16 weights on both sides
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=dtype)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tok).train()


def child(kind: str, result: Path, rest: list[str]) -> int:
    _install_probe(result)
    if kind == "tunewise":
        from tunewise.cli import main

        return main(rest)
    if kind == "trl":
        return run_trl(json.loads(Path(rest[0]).read_text())) or 0
    import runpy  # swift: untested here (ms-swift cannot be installed next to transformers 5.23)

    sys.argv = ["swift-sft", *rest]
    runpy.run_module("swift.cli.sft", run_name="__main__")
    return 0


# -- the parent: fixtures, interleaved runs, the table ------------------------------------------------------------

def pick_rows(tok, rows: list[dict], n: int) -> list[dict]:
    """n rows spread over the pool's length range (every len/n-th by length), kept in pool order."""
    import qwen_shape

    by_length = sorted(range(len(rows)), key=lambda i: qwen_shape.rendered_length(tok, rows[i]["messages"]))
    return [rows[i] for i in sorted(by_length[int((k + 0.5) * len(rows) / n)] for k in range(n))]


def skip_reason(system: System) -> str | None:
    if system.kind == "swift":
        probe = subprocess.run([sys.executable, "-c", "import swift"], capture_output=True, text=True)
        if probe.returncode:
            last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
            return (f"`import swift` fails ({last}); ms-swift 4.6 (the newest on PyPI) needs transformers<5.20, "
                    "peft<0.21 and trl<1.0, so it cannot share this venv")
    return None


def run_once(name: str, system: System, rnd: int, fx: dict, a, work: Path) -> dict:
    tag = f"r{rnd}-{name}"
    out, result, log = work / "runs" / tag, work / f"{tag}.json", work / f"{tag}.log"
    if system.kind == "tunewise":
        rest = tunewise_args(fx["model"], fx["data"], out, a) + system.args
    elif system.kind == "swift":
        rest = swift_args(fx["model"], fx["data"], out, a) + system.args
    else:
        spec = work / f"{tag}.spec.json"
        spec.write_text(json.dumps({"model": str(fx["model"]), "data": str(fx["data"]), "out": str(out),
                                    "batch": a.batch, "max_steps": a.max_steps, "max_length": a.max_length,
                                    "trl_data": a.trl_data, "args": system.args}))
        rest = [str(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_run", system.kind, "--_result", str(result), "--", *rest]
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (and its waited-for children's)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rec = {"system": name, "round": rnd, "rc": proc.returncode, "proc_s": time.perf_counter() - t0,
           "proc_cpu_s": usage.ru_utime + usage.ru_stime, "rss_gib": usage.ru_maxrss / 2**20, "log": str(log)}
    if proc.returncode == 0 and result.is_file():
        stats = json.loads(result.read_text())
        steps = stats["steps"]
        losses = [h["loss"] for h in stats["log_history"] if "loss" in h]
        rec.update(loop_s=stats["loop_s"], loop_cpu_s=stats["loop_cpu_s"], threads=stats.get("threads"),
                   tokens=sum(s["tokens"] for s in steps), labels=sum(s["labels"] for s in steps),
                   processed=sum(s["shape"][0] * s["shape"][1] for s in steps), steps=steps,
                   final_loss=losses[-1] if losses else float("nan"), first_loss=losses[0] if losses else float("nan"))
    else:
        rec["rc"] = rec["rc"] or 1
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        print(f"{tag}: failed (exit {proc.returncode}), log {log}:\n  " + "\n  ".join(tail), file=sys.stderr)
    return rec


def cell(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    mid = format(statistics.median(values), fmt)
    return mid if len(values) == 1 else f"{mid} ({format(min(values), fmt)}–{format(max(values), fmt)})"


COLUMNS = [(".1f", lambda r: r["loop_s"]), (".1f", lambda r: r["proc_s"]), (".1f", lambda r: r["loop_cpu_s"]),
           (".1f", lambda r: r["proc_cpu_s"]), (".2f", lambda r: r["rss_gib"]),
           (".0f", lambda r: r["tokens"] / r["loop_s"]), (".1f", lambda r: r["tokens"] / r["loop_cpu_s"])]


def table(records: list[dict], names: list[str], skipped: dict, fx: dict, a) -> str:
    total = sum(fx["lengths"])
    out = [f"### Training throughput: Qwen2.5-{a.model} shape ({fx['params'] / 1e6:.0f} M parameters, random init), "
           f"LoRA r8 all-linear, batch {a.batch} × {a.max_steps} steps, float32, {a.threads} threads, {a.rounds} "
           f"round(s), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
           f"{a.batch * a.max_steps} rows, rendered lengths {min(fx['lengths'])}–{max(fx['lengths'])} tokens, "
           f"{total} non-pad tokens in all; TRL data: {a.trl_data}.", "",
           "| system | loop s | process s | loop CPU s | process CPU s | peak RSS GiB | non-pad tok/s | tok/CPU-s "
           "| pad % | label tok | first → final loss |", "|---" * 11 + "|"]
    notes, reference = [], None
    for name in names:
        ok = [r for r in records if r["system"] == name and r["rc"] == 0]
        failed = [r["log"] for r in records if r["system"] == name and r["rc"] != 0]
        if failed:
            notes.append(f"- {name}: {len(failed)} run(s) failed, see {failed[0]}")
        if not ok:
            out.append(f"| {name} | failed |" + " |" * 9)
            continue
        first = ok[0]
        pad = 100 * (1 - first["tokens"] / first["processed"])
        cells = [cell([value(r) for r in ok], fmt) for fmt, value in COLUMNS]
        out.append(" | ".join([f"| {name}", *cells, f"{pad:.0f}", str(first["labels"]),
                               f"{first['first_loss']:.4f} → {cell([r['final_loss'] for r in ok], '.4f')} |"]))
        order = [s["tokens"] for s in first["steps"]]
        reference = reference or (name, order)
        if first["tokens"] != total or len(order) != a.max_steps:
            notes.append(f"- {name}: trained {first['tokens']} non-pad tokens in {len(order)} micro-batches; the data "
                         f"has {total} in {a.max_steps}")
        if order != reference[1]:
            notes.append(f"- {name}: per-step non-pad tokens {order} differ from {reference[0]}'s {reference[1]}")
        threads = {r.get("threads") for r in ok}
        if threads != {a.threads}:
            notes.append(f"- {name}: torch used {sorted(map(str, threads))} threads, not {a.threads}")
    if reference:
        notes.append(f"- per-step non-pad tokens ({reference[0]}): {reference[1]}; a system without a note here "
                     "trained the same rows in the same batches")
    notes += [f"- {name}: {SYSTEMS[name].kind} + `{shlex.join(SYSTEMS[name].args)}`" for name in names
              if SYSTEMS[name].args]
    notes += [f"- {name}: skipped: {why}" for name, why in skipped.items()]
    return "\n".join(out) + "\n\n" + "\n".join(notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="0.5B-4L", help="qwen_shape.py fixture: 0.5B-4L, 0.5B or 7B")
    p.add_argument("--systems", default="tunewise,trl,trl-padding-free,swift")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max_steps", type=int, default=8)
    p.add_argument("--max_length", type=int, default=1024)
    p.add_argument("--rows", type=int, default=256, help="synthetic rows to pick batch*max_steps from")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads, every system")
    p.add_argument("--trl_data", default="prompt-completion", choices=TRL_DATA)
    p.add_argument("--extra", action="append", default=[], metavar="SYSTEM=ARGS", help="more args for a system")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=BASE ARGS",
                   help="a new system: BASE's runner and args plus ARGS (run after --systems)")
    p.add_argument("--markdown", help="append the table to this file")
    p.add_argument("--json", help="write every run's measurements here")
    p.add_argument("--cache", help="fixture folder (qwen_shape.py)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (logs, run outputs)")
    for internal in ("--_run", "--_result"):  # a child run: see child()
        p.add_argument(internal, help=argparse.SUPPRESS)
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._run:
        return child(a._run, Path(a._result), a.rest)

    names = [n for n in a.systems.split(",") if n]
    for spec in a.variant:
        name, _, rest = spec.partition("=")
        base, *args = shlex.split(rest) or [""]
        if base not in SYSTEMS:
            p.error(f"--variant {spec}: no system {base!r} to base it on")
        SYSTEMS[name] = System(SYSTEMS[base].kind, SYSTEMS[base].args + args)
        if name not in names:  # a variant may be named in --systems too (to set its place in the order)
            names.append(name)
    for spec in a.extra:
        name, _, rest = spec.partition("=")
        if name not in SYSTEMS:
            p.error(f"--extra {spec}: no system {name}")
        SYSTEMS[name].args += shlex.split(rest)
    if a.rows < a.batch * a.max_steps:
        p.error(f"--rows {a.rows}: fewer than the batch x max_steps = {a.batch * a.max_steps} rows a run trains on")
    if unknown := [n for n in names if n not in SYSTEMS]:
        p.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    skipped = {n: why for n in names if (why := skip_reason(SYSTEMS[n]))}
    names = [n for n in names if n not in skipped]

    sys.path.insert(0, str(HERE))
    import qwen_shape

    root = qwen_shape.cache_root(a.cache)
    model = qwen_shape.build_model(a.model, root)
    tok = qwen_shape.load_tokenizer(root)
    work = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    rows = pick_rows(tok, qwen_shape.make_rows(tok, a.rows), a.batch * a.max_steps)
    qwen_shape.write_rows(work / "train.jsonl", rows)
    fx = {"model": model, "data": work / "train.jsonl",
          "params": json.loads((model / "fixture.json").read_text())["parameters"],
          "lengths": [qwen_shape.rendered_length(tok, r["messages"]) for r in rows]}
    records = []
    for rnd in range(1, a.rounds + 1):
        for name in names:
            rec = run_once(name, SYSTEMS[name], rnd, fx, a, work)
            records.append(rec)
            if rec["rc"] == 0:
                print(f"round {rnd} {name}: loop {rec['loop_s']:.1f} s, {rec['tokens'] / rec['loop_s']:.0f} tok/s, "
                      f"peak RSS {rec['rss_gib']:.2f} GiB, final loss {rec['final_loss']:.4f}", file=sys.stderr)
    text = table(records, names, skipped, fx, a)
    print(text)
    if a.markdown:
        with open(a.markdown, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=1))
    if a.keep:
        print(f"work folder: {work}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["rc"] == 0 for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
