"""`POST /v1/completions`, OpenAI's legacy text completion: the prompt is raw text, tokenized as it is (no chat
template, as vLLM does), and continued. `prompt` is a string or a list of strings; `n` choices of each
(serve/choices.py); `max_tokens` (16 when absent, as OpenAI and vLLM default; null: all the context leaves),
`temperature`, `top_p`, `stop`, `seed`, `stream`, `logprobs` (0-20: each token's logprob and that many top
alternatives, serve/logprobs.py), `echo` (the prompt before the completion; not with logprobs), and the vLLM
extras of the chat route. `suffix` and `best_of` other than n are refused (protocol.py)."""
from dataclasses import dataclass

from tunewise.args import Sampling
from tunewise.serve import protocol as P
from tunewise.serve.limits import ApiError, parse_request, room_for, sampling_of


@dataclass
class Prompt:
    text: str
    ids: list[int]
    sampling: Sampling


def completion_request(engine, body: bytes) -> tuple[P.CompletionRequest, list[Prompt]]:
    """The body parsed, validated and each prompt tokenized, or an ApiError (4xx). From a worker thread."""
    req = parse_request(engine, body, P.CompletionRequest)
    prompts = []
    for k, text in enumerate(req.prompts):
        ids = engine.text_ids(text)
        where = "prompt" if isinstance(req.prompt, str) else f"prompt.{k}"
        if not ids:
            raise ApiError(400, f"Invalid request: {where}: the prompt is empty (there is nothing to continue).",
                           param=where)
        prompts.append(Prompt(text, ids, sampling_of(req, room_for(engine, ids, req.max_tokens, where))))
    return req, prompts


def register(app, engine, max_request_bytes: int) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from tunewise.serve.choices import Choices, sse, streaming
    from tunewise.serve.logprobs import legacy

    @app.post("/v1/completions", max_body_size=max_request_bytes)
    async def completions(request: Request):
        body = await request.body()
        req, prompts = await run_in_threadpool(completion_request, engine, body)
        choices = Choices(engine.scheduler, req.stream)
        for p in prompts:
            choices.add(p.ids, p.sampling, req.n, stop=req.stop_strings, adapter=engine.models[req.model].adapter,
                        ignore_eos=req.ignore_eos, logprobs=req.logprobs)
        choices.submit()
        rid, created = P.completion_id("cmpl-"), P.now()

        def echoed(index: int) -> str:  # the text before choice `index`'s completion
            return prompts[index // req.n].text if req.echo else ""

        def logprobs(index: int, entries):
            return P.CompletionLogprobs(**legacy(entries, len(echoed(index)))) if req.logprobs is not None else None

        if not req.stream:
            return await choices.answer(request, lambda done: P.Completion(
                id=rid, created=created, model=req.model, usage=choices.usage(),
                choices=[P.CompletionChoice(index=i, text=echoed(i) + d.reply.text, logprobs=logprobs(i, d.logprobs),
                                            finish_reason=d.reply.finish_reason)
                         for i, d in done]))

        def chunk(index: int, text: str, finish=None, entries=None) -> str:
            return sse(P.Completion(id=rid, created=created, model=req.model, choices=[P.CompletionChoice(
                index=index, text=text, finish_reason=finish,
                logprobs=logprobs(index, entries) if entries is not None else None)]).model_dump())

        async def pieces():
            if req.echo:
                for index in range(len(prompts) * req.n):
                    yield chunk(index, echoed(index))
            async for piece in choices.pieces(
                    lambda index, text, entries: chunk(index, text, entries=entries),
                    lambda index, finish: chunk(index, "", finish),
                    usage if req.include_usage else None):
                yield piece

        def usage(counts):
            return sse(P.Completion(id=rid, created=created, model=req.model, choices=[], usage=counts).model_dump())

        return streaming(choices, pieces())
