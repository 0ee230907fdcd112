"""`tunewise webui`: a Gradio app with five tabs over one model in memory, in English or Chinese (a switch at the
top).

- Chat: pick the base model or an adapter (the ones given with --adapters, or any checkpoint found under
  --output_dir, loaded on first use), a system prompt and sampling settings; replies stream in; the history is
  kept until Clear.
- Train: a form for `tunewise sft` or `tunewise dpo` (with dataset upload), the exact command it runs, saving and
  loading the form as a `--config` YAML; Start runs the command as a subprocess, the tab shows its log and live
  loss / learning-rate plots read from the run's logging.jsonl; Stop ends it.
- Evaluate: `tunewise eval` of a checkpoint or model, optionally --compare a second, and its table.
- Export: `tunewise export` of a LoRA checkpoint into a merged model.
- Compare: two models answer one prompt side by side, streamed at the same time (batched together).

This module starts it (the models, then the Gradio server) for `tunewise webui`; webui/args.py holds the flags,
webui/models.py the models offered, webui/commands.py the command lines the forms run, webui/training.py the
subprocesses, webui/i18n.py the two languages, webui/layout.py the page and webui/tabs/ one module per tab.
Generation goes through the same batching engine as `tunewise serve` (serve/engine.py).
"""
from __future__ import annotations

import os

from tunewise.command import Command
from tunewise.webui.args import WebuiArgs
from tunewise.webui.layout import build_app
from tunewise.webui.models import ModelPool


def launch(demo, host: str, port: int, block: bool = True):
    """Start the Gradio server (queue on, no share link, no analytics)."""
    demo.queue(default_concurrency_limit=16)
    return demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block,
                       show_error=True, quiet=not block, ssr_mode=False, theme=demo.tunewise_theme, footer_links=[])


def run(args: WebuiArgs, sources: dict, argv: list[str]) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from tunewise.serve.engine import set_threads

    set_threads(0)
    pool = ModelPool(args)
    demo = build_app(pool, args)
    print(f"tunewise web UI on http://{args.host}:{args.port} (models: {', '.join(pool.choices())})", flush=True)
    try:
        launch(demo, args.host, args.port, block=True)
    finally:
        for job in demo.tunewise_jobs:  # no run outlives the UI that started it
            if job.running:
                job.stop()
        pool.engine.close()
    return 0


COMMAND = Command(WebuiArgs, run)
