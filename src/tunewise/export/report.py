"""export.json, written into every export's folder before it is published, and the summary printed from it: what
was produced (files and sizes), the checks (tunewise.export.checks) and how to run it."""
from __future__ import annotations

import datetime
import json
import re
import shlex
from pathlib import Path

EXPORT_JSON = "export.json"


def files_of(folder: Path) -> list[dict]:
    return [{"name": str(p.relative_to(folder)), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != EXPORT_JSON]


def ollama_name(label: str) -> str:
    """A model name Ollama accepts, from the checkpoint or model label."""
    parts = [p for p in Path(label).parts if p not in ("/", ".", "..")][-2:]
    name = re.sub(r"[^a-z0-9._-]+", "-", "-".join(parts).lower()).strip("-._")
    return name or "tunewise-export"


def how_to_run(kind: str, out: Path, label: str, gguf_name: str | None = None, modelfile: bool = False,
               system: str | None = None) -> list[str]:
    q = lambda p: shlex.quote(str(p))  # noqa: E731
    if kind == "gguf":
        lines = []
        if modelfile:
            lines.append(f"ollama create {ollama_name(label)} -f {q(out / 'Modelfile')}")
        sys_flag = f" -sys {shlex.quote(system)}" if system else ""
        lines += [f"llama-cli -m {q(out / gguf_name)}{sys_flag}", f"llama-server -m {q(out / gguf_name)}"]
        return lines
    return [f"vllm serve {q(out)}", f"tunewise serve --model {q(out)}", f"tunewise infer --model {q(out)}"]


def write_export_json(folder: Path, summary: dict) -> None:
    summary = {**summary, "files": files_of(folder),
               "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    (folder / EXPORT_JSON).write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_summary(summary: dict) -> None:
    """The export's summary on stdout, read back from its export.json."""
    out = Path(summary["output_dir"])
    written = json.loads((out / EXPORT_JSON).read_text(encoding="utf-8"))
    kind = written["kind"]
    if kind == "merged":
        print(f"merged model written to {out}")  # the web UI reads this line
    else:
        print(f"{kind} export written to {out}")
    for f in written["files"]:
        print(f"  {f['name']:<32} {_size(f['bytes']):>10}")
    checks = written.get("checks", {})
    src, dst = written.get("compared", ("source", kind))
    if tok := checks.get("tokenizer"):
        same = [name.removesuffix("_equal").replace("_", " ") for name, ok in tok.items() if ok]
        print(f"  tokenizer read back, equal to the source's: {', '.join(same) or 'nothing'}")
    if logits := checks.get("logits"):
        print(f"  logits on {logits['prompts']} probe prompts ({logits['positions']} positions): max |{dst} - {src}| = "
              f"{logits['max_abs_diff']:.3g} (largest |logit| {logits['source_max_abs_logit']:.3g}); argmax agrees "
              f"at {logits['argmax_agreement']:.1%} of positions")
    if ppl := checks.get("perplexity"):
        print(f"  held-out perplexity ({ppl['rows']} rows, {ppl['tokens']} tokens): {src} {ppl[src]:.4f}, {dst} "
              f"{ppl[dst]:.4f}, ratio {ppl['ratio']:.4f} (bound {ppl['bound']})")
    for a in checks.get("answers", []):
        mark = "same" if a["same"] else "differs"
        print(f"  {a['question']}  {src}: {a[src]!r}  {dst}: {a[dst]!r} ({mark})")
    shown = {"tokenizer", "logits", "perplexity", "answers"}
    if "perplexity_ratio" in checks:  # bitsandbytes' checks (tunewise.export.bnb.compare)
        shown |= {"perplexity_unquantized", "perplexity_quantized", "perplexity_ratio", "perplexity_ratio_bound",
                  "max_abs_logits_diff", "max_abs_logits_unquantized", "probes"}
        print(f"  {checks['quantization']}: held-out perplexity ({checks['heldout_rows']} rows) unquantized "
              f"{checks['perplexity_unquantized']:.4f}, quantized {checks['perplexity_quantized']:.4f}, ratio "
              f"{checks['perplexity_ratio']:.4f} (bound {checks['perplexity_ratio_bound']}); max |logits difference| "
              f"{checks['max_abs_logits_diff']:.3g} (largest |logit| {checks['max_abs_logits_unquantized']:.3g})")
        for probe in checks["probes"]:
            mark = "same" if probe["quantized"] == probe["unquantized"] else "differs"
            print(f"  {probe['question']}  unquantized: {probe['unquantized']!r}  quantized: {probe['quantized']!r} "
                  f"({mark})")
    for extra, value in checks.items():
        if extra not in shown:
            print(f"  {extra}: {json.dumps(value, ensure_ascii=False)[:200]}")
    print("run it:")
    for line in written.get("run", []):
        print(f"  {line}")

