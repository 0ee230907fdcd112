#!/usr/bin/env python3
"""What does the identity fine-tune cost, with and without general data mixed in? The README's table, reproduced.

    .venv/bin/python benchmarks/identity_recipe.py [--recipes mixed,alone] [--seeds 42,1,2]
                   [--cpu_kinds native|avx512,avx2,default] [--out output/identity-recipe] [--json results.json]

Recipes: `mixed`, the embedded model's identity recipe (tunewise.json "identity": its mix, epochs and batch size;
the recommended lr); `alone`, `--dataset self_cognition --num_train_epochs 10`; or any
`DATASETS@EPOCHS` (`"self_cognition tiny_skills#200@10"`). For every recipe, seed and CPU kind, one `tunewise sft`
run as 小黄 / Xiao Huang by 魔搭 / ModelScope (the model's recommended values otherwise), then `tunewise eval` on its
last checkpoint: held-out identity (8 Chinese, 8 English questions) and the 200
held-out additions against the base model (the adapter disabled). A CPU kind is torch's ATEN_CPU_CAPABILITY (the
vector kernels an Intel or AMD machine picks: `avx512`, `avx2`, or `default` for none); seeded runs repeat exactly on
one kind and differ between kinds, which is the spread a test bound must survive. Prints a markdown table; finished
runs under --out are reused (delete the folder to measure again).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

IDENTITY = ["--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭", "ModelScope"]


def recipe(name: str) -> tuple[list[str], float, list[str]]:
    """(dataset specs, epochs, further sft flags) of a recipe name or DATASETS@EPOCHS."""
    if name == "mixed":
        from tunewise.models.load import builtin_meta, resolve_model

        lora = builtin_meta(resolve_model("tunewise-tiny"))["identity"]["lora"]
        flags = [f"--{k}={v}" for k, v in lora.items() if k not in ("mix", "num_train_epochs")]
        return lora["mix"].split(), lora["num_train_epochs"], flags
    if name == "alone":
        return ["self_cognition"], 10, []
    specs, _, epochs = name.rpartition("@")
    return specs.split(), float(epochs), []


def run(name: str, seed: int, kind: str, out: Path, flags: list[str] = ()) -> dict:
    dataset, epochs, recipe_flags = recipe(name)
    flags = [*recipe_flags, *flags]
    tag = "".join(c if c.isalnum() else "_" for c in " ".join([name, *flags]))
    name_dir = f"{tag}_seed{seed}_{kind}"
    run_dir, report = out / name_dir, out / f"{name_dir}.json"
    if report.is_file():
        return json.loads(report.read_text(encoding="utf-8"))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if kind != "native":
        env["ATEN_CPU_CAPABILITY"] = kind
    cli = [sys.executable, "-m", "tunewise.cli"]
    with (out / f"{name_dir}.log").open("w", encoding="utf-8") as log:
        subprocess.run(cli + ["sft", "--dataset", *dataset, *IDENTITY, "--num_train_epochs", str(epochs),
                              "--seed", str(seed), "--report_to", "none", "--output_dir", str(run_dir),
                              "--add_version", "false", *flags], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        subprocess.run(cli + ["eval", "--adapters", str((run_dir / "last").resolve()),
                              "--output", str(run_dir / "eval.json")], env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    m = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))["models"][0]["metrics"]
    result = {"recipe": name, "flags": " ".join(flags), "dataset": " ".join(dataset), "epochs": epochs, "seed": seed, "kind": kind,
              "identity": m["identity_accuracy"], "zh": m["identity_accuracy_zh"], "en": m["identity_accuracy_en"],
              "mentions_zh": m["identity_mentions_zh"], "mentions_en": m["identity_mentions_en"],
              "additions": m["general_accuracy"],
              "additions_base": m["general_accuracy_base"]}
    report.write_text(json.dumps(result) + "\n", encoding="utf-8")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="mixed,alone", help="comma list: mixed, alone, or DATASETS@EPOCHS")
    p.add_argument("--seeds", default="42,1,2")
    p.add_argument("--cpu_kinds", default="native", help="comma list of ATEN_CPU_CAPABILITY values, or native")
    p.add_argument("--sft_flags", default="", help="further sft flags for every run, e.g. '--per_device_train_batch_size 8'")
    p.add_argument("--out", default="output/identity-recipe")
    p.add_argument("--json", help="also write every result to this file")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    flags = a.sft_flags.split()
    results = [run(name, int(seed), kind, out, flags)
               for name in a.recipes.split(",") for kind in a.cpu_kinds.split(",") for seed in a.seeds.split(",")]
    print("| recipe | --dataset, epochs | CPU kind | seed | identity, named cleanly (zh / en) | mentioned (zh / en) "
          "| additions (base) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        drop = (r["additions"] - r["additions_base"]) * 100
        print(f"| {r['recipe']} | {r['dataset']}, {r['epochs']:g} | {r['kind']} | {r['seed']} | "
              f"{r['identity']:.1%} ({r['zh']:.1%} / {r['en']:.1%}) | {r['mentions_zh']:.1%} / {r['mentions_en']:.1%} "
              f"| {r['additions']:.1%} ({drop:+.1f} points, base {r['additions_base']:.1%}) |")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
