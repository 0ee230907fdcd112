"""`tunewise serve`: an OpenAI-compatible HTTP server over a base model and its LoRA adapters, or vLLM.

    tunewise serve --model tunewise-tiny --adapters xiaohuang=output/v0-.../checkpoint-100 [--api-key KEY]

Routes: `GET /health`, `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions` (serve/chat.py) and
the legacy `POST /v1/completions` (serve/completions.py), streamed over server-sent events with `"stream": true`,
`n` choices each (serve/choices.py), with logprobs when asked (serve/logprobs.py). The request's `model` picks the
base model or an adapter; requests for different adapters are batched together (serve/batching.py). With `--api-key`, `/v1/*` wants
`Authorization: Bearer KEY` (401 otherwise); without it the server binds only to loopback unless told
`--allow_no_api_key` (serve/args.py). Any bad request gets an OpenAI-style JSON error with a 4xx status, alone:
the limits and checks are in serve/limits.py.

`--engine vllm` runs vLLM's own OpenAI server instead (`python -m vllm.entrypoints.openai.api_server`): on the
base model, on the merged export of a single adapter (written by `tunewise export` when missing), or on the base
with vLLM's `--enable-lora --lora-modules` for several adapters.
"""
import sys
from pathlib import Path

from tunewise.command import Command
from tunewise.errors import UserError
from tunewise.serve.args import MAX_REQUEST_BYTES, ServeArgs
from tunewise.serve.engine import build_engine, parse_adapters, resolve_base, set_threads


# --- the FastAPI app -------------------------------------------------------------------------------------------
def create_app(engine, api_key: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES):
    """The FastAPI application over a BatchEngine. Requests are checked and refused in serve/limits.py."""
    from fastapi import FastAPI

    from tunewise.serve import chat, completions, protocol as P
    from tunewise.serve.limits import GateMiddleware, error, install_error_handlers

    app = FastAPI(title="tunewise", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    install_error_handlers(app, max_request_bytes)
    app.add_middleware(GateMiddleware, api_key=api_key, max_request_bytes=max_request_bytes)

    @app.get("/health")
    async def health():
        s = engine.scheduler
        return {"status": "ok", "running": s.running, "waiting": s.waiting, "models": list(engine.models),
                "batching": s.batching, "threads": _torch_threads(), "stats": dict(s.stats)}

    def card(served) -> P.ModelCard:
        parent = None if served.adapter is None else engine.base_name
        return P.ModelCard(id=served.name, created=served.created, root=served.path, parent=parent)

    @app.get("/v1/models")
    async def list_models():
        return P.ModelList(data=[card(s) for s in engine.models.values()]).model_dump()

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        if model_id not in engine.models:
            return error(404, f"The model `{model_id}` does not exist.", "not_found_error", "model", "model_not_found")
        return card(engine.models[model_id]).model_dump()

    chat.register(app, engine, max_request_bytes)
    completions.register(app, engine, max_request_bytes)
    return app


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --- vLLM ------------------------------------------------------------------------------------------------------
def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def chat_template_for_vllm(args: ServeArgs, base: str, specs) -> str | None:
    """--template's Jinja, or for a base without a template the one its adapters were trained with (a merged
    export carries its own)."""
    from tunewise.models.load import saved_chat_template

    if args.template:
        from tunewise.data.templates import TEMPLATES

        if args.template not in TEMPLATES:
            raise UserError(f"--template {args.template}: expected one of {', '.join(TEMPLATES)}.")
        return TEMPLATES[args.template].jinja
    if len(specs) > 1 and Path(base).is_dir() and saved_chat_template(base) is None:
        return next((t for t in map(saved_chat_template, (s.path for s in specs)) if t), None)
    return None


def vllm_command(args: ServeArgs, python: str = sys.executable, export=None) -> list[str]:
    """The `python -m vllm.entrypoints.openai.api_server ...` command line for these flags.

    One adapter: its merged export (made with `tunewise export` when CHECKPOINT-merged is missing) is served under
    the adapter's name. Several adapters: the base model with vLLM's LoRA support (`--lora-modules`)."""
    specs = parse_adapters(args.adapters)
    base, base_name = resolve_base(args.model, specs)
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--host", args.host, "--port", str(args.port)]
    if len(specs) == 1:
        merged = Path(specs[0].path + "-merged")
        if not (merged / "config.json").is_file():
            if export is None:
                from tunewise.models.merge import export
            from tunewise.args import ExportArgs

            print(f"writing the merged export vLLM will serve: {merged}", flush=True)
            merged = export(ExportArgs(adapters=[specs[0].path], model=args.model or specs[0].base,
                                       output_dir=str(merged), torch_dtype=args.torch_dtype))
        cmd += ["--model", str(merged), "--served-model-name", specs[0].name]
    else:
        cmd += ["--model", base, "--served-model-name", args.served_model_name or base_name]
        if specs:
            cmd += ["--enable-lora", "--max-lora-rank", str(max(max(s.rank for s in specs), 8)),
                    "--max-loras", str(len(specs)), "--lora-modules", *[f"{s.name}={s.path}" for s in specs]]
    template = chat_template_for_vllm(args, base, specs)
    if template:
        cmd += ["--chat-template", template]  # vLLM takes the template itself as well as a file
    cmd += ["--tensor-parallel-size", str(args.tensor_parallel_size)]
    if args.max_model_len:
        cmd += ["--max-model-len", str(args.max_model_len)]
    if args.enable_prefix_caching:
        cmd += ["--enable-prefix-caching"]
    if args.torch_dtype != "auto":
        cmd += ["--dtype", args.torch_dtype]
    if args.api_key:
        cmd += ["--api-key", args.api_key]
    return cmd


def serve_vllm(args: ServeArgs) -> int:
    import os
    import shlex

    if not vllm_available():
        raise UserError(f"--engine vllm: vLLM is not installed in this Python ({sys.executable}). Install it with "
                        "`pip install vllm` (Linux with an NVIDIA GPU; see docs.vllm.ai for other platforms), "
                        "or serve with --engine hf (the default, runs anywhere).")
    cmd = vllm_command(args)
    shown = [("***" if i and cmd[i - 1] == "--api-key" else part) for i, part in enumerate(cmd)]
    print("starting vLLM: " + shlex.join(shown), flush=True)
    os.execv(cmd[0], cmd)
    return 0  # not reached


# --- main ------------------------------------------------------------------------------------------------------
def run(args: ServeArgs, sources: dict, argv: list[str]) -> int:
    if warning := args.open_warning():  # a non-loopback --host without a key was allowed (--allow_no_api_key)
        print(warning, file=sys.stderr, flush=True)
    if args.engine == "vllm":
        return serve_vllm(args)
    import uvicorn

    from tunewise.serve.limits import MAX_HEADER_BYTES, JsonErrorH11Protocol

    set_threads(args.num_threads)
    engine = build_engine(args)
    app = create_app(engine, args.api_key, args.max_request_bytes)
    names = ", ".join(engine.models)
    print(f"serving {names} on http://{args.host}:{args.port}/v1 (batching: {args.batching}, "
          f"max batch {args.max_batch_size}{', API key required' if args.api_key else ''})", flush=True)
    try:
        # the h11 parser, whose head limit is ours to set and whose refusals JsonErrorH11Protocol words in JSON
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, http=JsonErrorH11Protocol,
                    h11_max_incomplete_event_size=MAX_HEADER_BYTES)
    finally:
        engine.close()
    return 0


COMMAND = Command(ServeArgs, run)
