"""`tunewise serve`: an OpenAI-compatible HTTP server over a base model and its LoRA adapters, or vLLM.

    tunewise serve --model tunewise-tiny --adapters xiaohuang=output/v0-.../checkpoint-100 [--api-key KEY]

Routes: `GET /health`, `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/chat/completions` (serve/chat.py) and
the legacy `POST /v1/completions` (serve/completions.py), streamed over server-sent events with `"stream": true`,
`n` choices each (serve/choices.py), with logprobs when asked (serve/logprobs.py). The request's `model` picks the
base model or an adapter; requests for different adapters are batched together (serve/batching.py). With `--api-key`, `/v1/*` wants
`Authorization: Bearer KEY` (401 otherwise); without it the server binds only to loopback unless told
`--allow_no_api_key` (serve/args.py). Any bad request gets an OpenAI-style JSON error with a 4xx status, alone:
the limits and checks are in serve/limits.py.

`--engine vllm` hands the flags over to vLLM's own OpenAI server instead, run by the Python that has vLLM (its own
venv, .venv-vllm/): the base model and the adapters through vLLM's LoRA support (serve/vllm.py).
"""
import sys

from tunewise.command import Command
from tunewise.serve.args import MAX_REQUEST_BYTES, ServeArgs
from tunewise.serve.engine import build_engine, set_threads


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


# --- main ------------------------------------------------------------------------------------------------------
def run(args: ServeArgs, sources: dict, argv: list[str]) -> int:
    if warning := args.open_warning():  # a non-loopback --host without a key was allowed (--allow_no_api_key)
        print(warning, file=sys.stderr, flush=True)
    if args.engine == "vllm":
        from tunewise.serve.vllm import serve_vllm

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
