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
from dataclasses import dataclass
from pathlib import Path

from tunewise.command import Command
from tunewise.errors import UserError
from tunewise.serve.args import MAX_REQUEST_BYTES, ServeArgs


# --- models: base + adapters -----------------------------------------------------------------------------------
@dataclass
class AdapterSpec:
    name: str
    path: str
    base: str | None  # the base model its run was trained on (args.json), when known
    system: str | None
    rank: int


def parse_adapters(items: list[str]) -> list[AdapterSpec]:
    """NAME=CHECKPOINT items -> specs; each must be a LoRA checkpoint. All problems are reported at once."""
    from tunewise.models.checkpoint import is_lora, lora_rank, run_args_of

    specs, problems, names = [], [], set()
    for item in items:
        name, eq, path = item.partition("=")
        if not eq:
            name, path = Path(item.rstrip("/")).name, item
        if not name or not path:
            problems.append(f"--adapters {item}: expected NAME=CHECKPOINT.")
            continue
        ckpt = Path(path).expanduser()
        if name in names:
            problems.append(f"--adapters {item}: the name {name!r} is given twice.")
        names.add(name)
        if not ckpt.is_dir():
            problems.append(f"--adapters {item}: no such checkpoint directory.")
            continue
        if not is_lora(ckpt):
            kind = "a full model; serve it with --model" if (ckpt / "config.json").is_file() else "not a checkpoint"
            problems.append(f"--adapters {item}: no adapter_config.json, so not a LoRA checkpoint ({kind}).")
            continue
        run_args = run_args_of(str(ckpt))
        specs.append(AdapterSpec(name, str(ckpt.resolve()), run_args.get("model"), run_args.get("system"),
                                 lora_rank(ckpt)))
    if problems:
        raise UserError(" ".join(problems))
    return specs


def resolve_base(model: str | None, adapters: list[AdapterSpec]) -> tuple[str, str]:
    """(base directory or hub id, its served name). Adapters trained on another base are an error."""
    from tunewise.models.load import DEFAULT_MODEL, resolve_model

    if model is None:
        bases = [a.base for a in adapters if a.base]
        model = bases[0] if bases else DEFAULT_MODEL
    base = resolve_model(model)
    for a in adapters:
        if a.base and _same_model(resolve_model(a.base), base) is False:
            raise UserError(f"--adapters {a.name}={a.path}: trained on {a.base}, but the base model served is {model}. "
                            f"Pass --model {a.base}, or serve it from another server.")
    return base, model


def _same_model(a: str, b: str) -> bool | None:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    if pa.exists() != pb.exists():
        return None  # a local copy of a hub model cannot be told apart: allow
    return a == b


def build_engine(args: ServeArgs):
    from tunewise.models.load import saved_chat_template
    from tunewise.serve.engine import BatchEngine

    specs = parse_adapters(args.adapters)
    base, name = resolve_base(args.model, specs)
    name = args.served_model_name or name
    if name in {s.name for s in specs}:
        raise UserError(f"--adapters: the name {name!r} is the base model's; choose another.")
    tokenizer_dir = base
    if args.template is None and Path(base).is_dir() and saved_chat_template(base) is None:
        # a base model without a template: its adapters saved the one they were trained with
        tokenizer_dir = next((s.path for s in specs if saved_chat_template(s.path) is not None), base)
    engine = BatchEngine(base, name, args.system, args.torch_dtype, args.attn_impl, args.max_batch_size, args.batching,
                         args.template, tokenizer_dir)
    for spec in specs:
        engine.add_adapter(spec.name, spec.path, spec.system)
    return engine


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
                from tunewise.export import export
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


def set_threads(n: int) -> int:
    """torch intra-op threads: n, or (n == 0) all cores but one. On a small CPU the tokenizer, the HTTP server and
    the batching loop need a core of their own; oversubscribed torch threads spin and slow every step down."""
    import os

    import torch

    if n <= 0:
        n = max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(n)
    return n


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
