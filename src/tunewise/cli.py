"""`tunewise <command> [flags]`: a table of commands; each module is imported only when its command runs."""
from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {  # name -> (module, its Command attribute, description)
    "sft": ("tunewise.training", "SFT", "supervised fine-tuning (LoRA or full)"),
    "dpo": ("tunewise.training", "DPO", "preference alignment (DPO and TRL's other pairwise losses) with LoRA or full"),
    "rlhf": ("tunewise.training", "RLHF", "ms-swift's entry: --rlhf_type dpo | kto (unpaired rows) | orpo | simpo | "
             "cpo (no reference model) | grpo (verifiable rewards) | rm (a reward model)"),
    "plan": ("tunewise.training", "PLAN", "show the run plan (steps, warmup, LR curve) without training; --rlhf_type dpo|grpo|kto|orpo|simpo|cpo|rm for those"),
    "infer": ("tunewise.infer.chat", "COMMAND", "chat with a base model or a checkpoint"),
    "export": ("tunewise.export", "COMMAND", "merge a LoRA checkpoint, or write it as GGUF (+ Ollama Modelfile) or quantized"),
    "eval": ("tunewise.evaluate.cli", "COMMAND", "identity, general skills, repetition and loss of a model or checkpoint; --compare two"),
    "serve": ("tunewise.serve.app", "COMMAND", "OpenAI-compatible API server: base model + LoRA adapters, batched (or vLLM)"),
    "webui": ("tunewise.webui.app", "COMMAND", "web UI: chat, train (sft, dpo, rlhf), evaluate, export and compare in the browser"),
    "sweep": ("tunewise.sweep.run", "COMMAND", "a grid of sft runs (comma lists), evaluated: results.csv/.md, loss curves; resumable"),
}


def usage() -> str:
    lines = ["usage: tunewise <command> [--flag value ...]   (tunewise <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name:<8} {desc}" for name, (_, _, desc) in COMMANDS.items()]
    return "\n".join(lines)


def run_command(name: str, argv: list[str]) -> int:
    """--help, or parse the flags (every problem at once, as a UserError) and run the command with them."""
    from tunewise.flags import help_text, parse

    module, attribute, _ = COMMANDS[name]
    command = getattr(importlib.import_module(module), attribute)
    if "-h" in argv or "--help" in argv:
        cls = command.args_class(argv)
        print(command.help(cls) if command.help else help_text(cls, name))
        return 0
    if command.parse:
        args, sources = command.parse(argv)
    else:
        args, sources, _ = parse(command.args_class(argv), argv, command.extra_flags)
    return command.run(args, sources, argv) or 0


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
    from tunewise.errors import Stopped, UserError

    try:
        return run_command(argv[0], argv[1:])
    except UserError as e:
        print(f"tunewise {argv[0]}: error: {e}", file=sys.stderr)
        return e.exit_code
    except Stopped as e:
        print(f"tunewise {argv[0]}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"\ntunewise {argv[0]}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
