"""`POST /v1/chat/completions`: the chat template's prompt, `n` choices (serve/choices.py), each streamed or not,
with the logprobs of their tokens when asked (`logprobs: true`, `top_logprobs: K`; serve/logprobs.py says which
distribution they are of)."""

def register(app, engine, max_request_bytes: int) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from tunewise.serve import protocol as P
    from tunewise.serve.choices import Choices, sse, streaming
    from tunewise.serve.limits import chat_request
    from tunewise.serve.logprobs import chat_content

    @app.post("/v1/chat/completions", max_body_size=max_request_bytes)
    async def chat_completions(request: Request):
        body = await request.body()  # a chunked body past max_request_bytes: FastAPI's body limit raises the 413
        chat = await run_in_threadpool(chat_request, engine, body)  # parsing and tokenizing: off the event loop
        req = chat.request
        choices = Choices(engine.scheduler, req.stream)
        choices.add(chat.prompt_ids, chat.sampling, req.n, stop=req.stop_strings,
                    adapter=engine.models[req.model].adapter, ignore_eos=req.ignore_eos, logprobs=req.top_count)
        choices.submit()
        rid, created = P.completion_id(), P.now()

        def logprobs(entries):
            return P.ChoiceLogprobs(content=chat_content(entries)) if req.logprobs else None

        if not req.stream:
            return await choices.answer(request, lambda done: P.ChatCompletion(
                id=rid, created=created, model=req.model, usage=choices.usage(),
                choices=[P.Choice(index=i, message=P.AssistantMessage(content=d.reply.text),
                                  finish_reason=d.reply.finish_reason, logprobs=logprobs(d.logprobs))
                         for i, d in done]))

        def chunk(index: int, delta: dict, finish=None, entries=None) -> str:
            body = P.ChatCompletionChunk(id=rid, created=created, model=req.model, choices=[
                P.ChunkChoice(index=index, delta=P.Delta(**delta), finish_reason=finish,
                              logprobs=logprobs(entries) if entries is not None else None)]).model_dump()
            body["choices"][0]["delta"] = delta  # only the fields this piece carries, as OpenAI sends them
            return sse(body)

        async def pieces():
            for index in range(req.n):
                yield chunk(index, {"role": "assistant", "content": ""})
            async for piece in choices.pieces(
                    lambda index, text, entries: chunk(index, {"content": text}, entries=entries),
                    lambda index, finish: chunk(index, {}, finish),
                    usage if req.include_usage else None):
                yield piece

        def usage(counts):
            return sse(P.ChatCompletionChunk(id=rid, created=created, model=req.model, choices=[],
                                             usage=counts).model_dump())

        return streaming(choices, pieces())
