"""`tunewise <command> [flags]`: a table of commands; each module is imported only when its command runs."""
from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "sft": ("tunewise.train.sft", "main", "supervised fine-tuning (LoRA or full)"),
    "dpo": ("tunewise.train.dpo", "main", "preference alignment (DPO and TRL's other pairwise losses) with LoRA or full"),
    "plan": ("tunewise.train.sft", "plan_main", "show the run plan (steps, warmup, LR curve) without training; --rlhf_type dpo for dpo"),
    "infer": ("tunewise.infer.chat", "main", "chat with a base model or a checkpoint"),
    "export": ("tunewise.export", "main", "merge a LoRA checkpoint into a plain Hugging Face model"),
    "eval": ("tunewise.evaluate.cli", "main", "identity, general skills, repetition and loss of a model or checkpoint; --compare two"),
    "serve": ("tunewise.serve.app", "main", "OpenAI-compatible API server: base model + LoRA adapters, batched (or vLLM)"),
    "webui": ("tunewise.webui.app", "main", "web UI: chat, train and compare in the browser"),
    "sweep": ("tunewise.sweep.run", "main", "a grid of sft runs (comma lists), evaluated: results.csv/.md, loss curves; resumable"),
}


def usage() -> str:
    lines = ["usage: tunewise <command> [--flag value ...]   (tunewise <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<8} {desc}" for name, (_, _, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from tunewise import __version__

        print(f"tunewise {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"tunewise: unknown command '{argv[0]}'.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    # peft 0.21 reads transformers 5's deprecated alias on every load; the warning is not the user's to act on
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    module, func, _ = COMMANDS[argv[0]]
    from tunewise.errors import UserError

    try:
        return getattr(importlib.import_module(module), func)(argv[1:]) or 0
    except UserError as e:
        print(f"tunewise {argv[0]}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"\ntunewise {argv[0]}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
