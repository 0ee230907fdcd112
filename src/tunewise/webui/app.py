"""`tunewise webui`: a Gradio app with three tabs over one model in memory.

- Chat: pick the base model or an adapter (the ones given with --adapters, or any checkpoint found under
  --output_dir, loaded on first use), a system prompt and sampling settings; replies stream in; the history is
  kept until Clear.
- Train: a form for the `tunewise sft` flags (with dataset upload) that starts the run as a subprocess, shows
  its log and live loss / learning-rate plots read from the run's logging.jsonl, and a Stop button.
- Compare: two models answer one prompt side by side, streamed at the same time (batched together).

This module starts it (the models, then the Gradio server) for `tunewise webui`; webui/args.py holds the flags,
webui/models.py the models offered, webui/training.py the Train tab's subprocess and webui/layout.py the tabs.
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
    from tunewise.serve.app import set_threads

    set_threads(0)
    pool = ModelPool(args)
    demo = build_app(pool, args)
    print(f"tunewise web UI on http://{args.host}:{args.port} (models: {', '.join(pool.choices())})", flush=True)
    try:
        launch(demo, args.host, args.port, block=True)
    finally:
        if demo.tunewise_job.running:
            demo.tunewise_job.stop()
        pool.engine.close()
    return 0


COMMAND = Command(WebuiArgs, run)
