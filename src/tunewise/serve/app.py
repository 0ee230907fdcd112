"""`tunewise serve`: an OpenAI-compatible HTTP server over a base model and its LoRA adapters, or vLLM.

    tunewise serve --model tunewise-tiny --adapters xiaohuang=output/v0-.../checkpoint-100 [--api-key KEY]

Routes: `GET /health`, `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions` (streamed over
server-sent events with `"stream": true`). The request's `model` picks the base model or an adapter; requests
for different adapters are batched together (serve/batching.py). With `--api-key`, `/v1/*` wants
`Authorization: Bearer KEY` (401 otherwise). Any bad request gets an OpenAI-style JSON error with a 4xx status.

`--engine vllm` runs vLLM's own OpenAI server instead (`python -m vllm.entrypoints.openai.api_server`): on the
base model, on the merged export of a single adapter (written by `tunewise export` when missing), or on the base
with vLLM's `--enable-lora --lora-modules` for several adapters.
"""
import asyncio
import hmac
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tunewise.command import Command
from tunewise.flags import below_minimum, flag_field
from tunewise.errors import UserError

ENGINES = ("hf", "vllm")


@dataclass
class ServeArgs:
    """Serve a base model and LoRA adapters over an OpenAI-compatible API (`tunewise serve`)."""

    model: str | None = flag_field(None, "base model (default: the adapters' base from their args.json, else tunewise-tiny)")
    adapters: list[str] = flag_field([], "LoRA checkpoints served by name: NAME=CHECKPOINT ... (a bare CHECKPOINT is named "
                                 "after its folder)")
    served_model_name: str | None = flag_field(None, "the base model's name in /v1/models and requests (default: --model)")
    host: str = flag_field("127.0.0.1", "address to bind; 0.0.0.0 exposes the server to the network")
    port: int = flag_field(8000, "TCP port")
    api_key: str | None = flag_field(None, "require 'Authorization: Bearer API_KEY' on /v1 routes")
    engine: str = flag_field("hf", "hf (this process: transformers + peft, batched) | vllm (vLLM's OpenAI server)")
    system: str | None = flag_field(None, "system prompt for the base model's chats that have none (adapters use their run's)")
    torch_dtype: str = flag_field("auto", "auto | float32 | bfloat16 | float16")
    attn_impl: str | None = flag_field(None, "attention implementation: sdpa | eager")
    max_batch_size: int = flag_field(32, "most requests decoded together in one forward pass")
    batching: str = flag_field("continuous", "continuous | dynamic (new requests wait for an empty batch) | none (one at a time)")
    tensor_parallel_size: int = flag_field(1, "vLLM: GPUs per model")
    max_model_len: int | None = flag_field(None, "vLLM: context length")
    enable_prefix_caching: bool = flag_field(False, "vLLM: reuse the KV cache of shared prompt prefixes")
    num_threads: int = flag_field(0, "torch CPU threads for generation; 0 = one less than the cores (the HTTP side keeps one)")
    log_level: str = flag_field("info", "uvicorn log level: critical | error | warning | info | debug")

    def __post_init__(self):
        from tunewise.serve.batching import BATCHING

        problems = []
        if self.engine not in ENGINES:
            problems.append(f"--engine {self.engine}: expected one of {', '.join(ENGINES)}.")
        if self.batching not in BATCHING:
            problems.append(f"--batching {self.batching}: expected one of {', '.join(BATCHING)}.")
        if not 0 < self.port < 65536:
            problems.append(f"--port {self.port}: expected 1-65535.")
        problems += below_minimum(self, ("max_batch_size", "tensor_parallel_size"))
        if problems:
            raise UserError(" ".join(problems))


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
    from tunewise.checkpoint import is_lora, lora_rank, run_args_of

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
    from tunewise.serve.engine import BatchEngine

    specs = parse_adapters(args.adapters)
    base, name = resolve_base(args.model, specs)
    name = args.served_model_name or name
    if name in {s.name for s in specs}:
        raise UserError(f"--adapters: the name {name!r} is the base model's; choose another.")
    engine = BatchEngine(base, name, args.system, args.torch_dtype, args.attn_impl, args.max_batch_size, args.batching)
    for spec in specs:
        engine.add_adapter(spec.name, spec.path, spec.system)
    return engine


# --- the FastAPI app -------------------------------------------------------------------------------------------
def create_app(engine, api_key: str | None = None):
    """The FastAPI application over a BatchEngine."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import ValidationError
    from starlette.exceptions import HTTPException

    from tunewise.args import Sampling
    from tunewise.serve import protocol as P
    from tunewise.serve.generation import Delta, Done, Request as Generation

    app = FastAPI(title="tunewise", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    def error(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
              code: str | None = None) -> JSONResponse:
        return JSONResponse(P.error_body(message, type, param, code), status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        kind = {401: "authentication_error", 404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"Unknown route {request.method} {request.url.path}."
        return error(exc.status_code, message, kind)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return error(400, _validation_message(exc.errors()))

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)

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

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as e:
            return error(400, f"The request body is not valid JSON ({e}).")
        if not isinstance(body, dict):
            return error(400, "The request body must be a JSON object.")
        try:
            req = P.ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            errors = e.errors()
            param = ".".join(str(p) for p in errors[0]["loc"]) if errors and errors[0]["loc"] else None
            return error(400, _validation_message(errors), param=param)
        if req.model not in engine.models:
            return error(404, f"The model `{req.model}` does not exist. Served: {', '.join(engine.models)}.",
                         "not_found_error", "model", "model_not_found")
        messages = [m.as_template_message() for m in req.messages]
        try:
            prompt_ids = engine.prompt_ids(req.model, messages)
        except Exception as e:  # the chat template refused the conversation (e.g. roles out of order)
            return error(400, f"The chat template cannot render these messages: {e}", param="messages")
        context = engine.scheduler.max_length
        limit = req.token_limit
        room = context - len(prompt_ids)
        if room < 1 or (limit is not None and limit > room):
            asked = f"{len(prompt_ids)} in the messages" + (f", {limit} in the completion" if limit else "")
            return error(400, f"This model's maximum context length is {context} tokens; you requested {asked}.",
                         param="messages", code="context_length_exceeded")
        sampling = Sampling(
            temperature=req.temperature if req.temperature is not None else 1.0,
            top_p=req.top_p if req.top_p is not None else 1.0,
            top_k=req.top_k if req.top_k is not None else 0,
            repetition_penalty=req.repetition_penalty or 1.0,
            max_new_tokens=limit or room,
            seed=req.seed,
        )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        emit = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)  # noqa: E731
        handle = engine.scheduler.submit(Generation(prompt_ids, emit, sampling, req.stop_strings,
                                                    engine.models[req.model].adapter, req.ignore_eos))
        rid, created = P.completion_id(), P.now()

        if not req.stream:
            try:
                while True:
                    event = await events.get()
                    if isinstance(event, Done):
                        break
                    if not isinstance(event, Delta):
                        return error(500, event.message, "server_error")
            finally:
                handle.cancel()
            reply = event.reply
            return P.ChatCompletion(
                id=rid, created=created, model=req.model,
                choices=[P.Choice(message=P.AssistantMessage(content=reply.text), finish_reason=reply.finish_reason)],
                usage=_usage(reply)).model_dump()

        include_usage = bool(req.stream_options and req.stream_options.include_usage)

        def sse(obj) -> str:
            return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"

        def chunk(delta: dict, finish=None) -> str:
            body = P.ChatCompletionChunk(id=rid, created=created, model=req.model,
                                         choices=[P.ChunkChoice(delta=P.Delta(**delta), finish_reason=finish)]).model_dump()
            body["choices"][0]["delta"] = delta  # only the fields this piece carries, as OpenAI sends them
            return sse(body)

        async def stream():
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    event = await events.get()
                    if isinstance(event, Delta):
                        yield chunk({"content": event.text})
                    elif isinstance(event, Done):
                        yield chunk({}, event.reply.finish_reason)
                        if include_usage:
                            yield sse(P.ChatCompletionChunk(id=rid, created=created, model=req.model, choices=[],
                                                            usage=_usage(event.reply)).model_dump())
                        break
                    else:
                        yield sse(P.error_body(event.message, "server_error"))
                        break
                yield "data: [DONE]\n\n"
            finally:
                handle.cancel()  # the client went away, or we are done: either way the row leaves the batch

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


class ApiKeyMiddleware:
    """Pure ASGI middleware: /v1 routes need `Authorization: Bearer KEY` (a 401 JSON error otherwise)."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                from fastapi.responses import JSONResponse

                from tunewise.serve.protocol import error_body

                message = ("Missing API key: send the header 'Authorization: Bearer KEY'." if not header
                           else "Incorrect API key provided.")
                response = JSONResponse(error_body(message, "authentication_error", code="invalid_api_key"),
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _usage(reply):
    from tunewise.serve.protocol import Usage

    return Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                 total_tokens=reply.prompt_tokens + reply.completion_tokens)


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
    return "Invalid request: " + "; ".join(parts) + "."


# --- vLLM ------------------------------------------------------------------------------------------------------
def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


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
    if args.engine == "vllm":
        return serve_vllm(args)
    import uvicorn

    set_threads(args.num_threads)
    engine = build_engine(args)
    app = create_app(engine, args.api_key)
    names = ", ".join(engine.models)
    print(f"serving {names} on http://{args.host}:{args.port}/v1 (batching: {args.batching}, "
          f"max batch {args.max_batch_size}{', API key required' if args.api_key else ''})", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        engine.close()
    return 0


COMMAND = Command(ServeArgs, run)
