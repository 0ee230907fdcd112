"""The choices of one HTTP request: `n` samples of each of its prompts, each its own row in the batching scheduler,
their events merged for the route that answers (serve/chat.py, serve/completions.py).

Choice `k * n + i` is sample `i` of prompt `k` (OpenAI's and vLLM's numbering). Every choice is an independent
`Request`, so the n samples of a prompt decode side by side in one batch; with a `seed`, choice 0 keeps that seed
(n=1 answers as before) and choice i draws with a seed derived from (seed, i), so the set of choices is
reproducible and the choices differ from one another. Greedy choices (temperature 0) are identical, as OpenAI's are.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random

from tunewise.args import Sampling
from tunewise.serve import protocol as P
from tunewise.serve.generation import Delta, Done, Failed, Request
from tunewise.serve.limits import ApiError, disconnected


def choice_seed(seed: int | None, i: int) -> int | None:
    if seed is None or i == 0:
        return seed
    return random.Random(f"{seed}/{i}").randrange(P.MAX_SEED + 1)  # a str seeds through SHA-512: the same every run


class Choices:
    """Submits the choices and collects their events on the route's event loop. Use from a coroutine."""

    def __init__(self, scheduler, stream: bool):
        self.scheduler = scheduler
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.handles: list[Request] = []
        self.prompt_tokens = 0
        self.done: dict[int, Done] = {}
        self.end = self.loop.create_future()  # non-streamed: every Done, or the first Failed

    def add(self, prompt_ids: list[int], sampling: Sampling, n: int, **request) -> None:
        """n choices of one prompt; `request`: Request's stop, adapter, ignore_eos, logprobs."""
        self.prompt_tokens += len(prompt_ids)
        for i in range(n):
            s = dataclasses.replace(sampling, seed=choice_seed(sampling.seed, i))
            self.handles.append(Request(prompt_ids, self._emitter(len(self.handles)), s, **request))

    def submit(self) -> None:
        """Every choice to the scheduler at once."""
        try:
            self.scheduler.submit_all(self.handles)
        except RuntimeError as e:  # closed: the server is shutting down
            raise ApiError(503, f"{e}.", "server_error") from None

    def _emitter(self, index: int):
        def emit(event):  # from the worker thread
            if self.stream:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
            elif not isinstance(event, Delta):  # not streamed: only the end matters, the text is in Done's reply
                self.loop.call_soon_threadsafe(self._settle, index, event)
        return emit

    def _settle(self, index: int, event) -> None:
        if self.end.done():
            return
        if isinstance(event, Failed):
            self.end.set_result(event)
            return
        self.done[index] = event
        if len(self.done) == len(self.handles):
            self.end.set_result(self.done)

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()  # done, or the client went away: either way the row leaves the batch

    async def wait(self, request) -> dict[int, Done] | Failed | None:
        """Not streamed: every choice's Done by index, the first Failed, or None when the client went away."""
        gone = asyncio.create_task(disconnected(request))
        try:
            await asyncio.wait({self.end, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            self.cancel()
        return self.end.result() if self.end.done() else None

    async def answer(self, request, body):
        """Not streamed: the JSON of `body(every choice's Done, by index)` once all are done; a 500 error when one
        failed, and 499 (nginx's "client closed request"; nobody reads it) when the client went away."""
        from fastapi.responses import Response

        from tunewise.serve.limits import error

        result = await self.wait(request)
        if result is None:
            return Response(status_code=499)
        if isinstance(result, Failed):
            return error(500, result.message, "server_error")
        return body(sorted(result.items())).model_dump()

    async def events(self):
        """Streamed: (index, event) as they come, until every choice is Done or one has Failed."""
        left = len(self.handles)
        while left:
            index, event = await self.queue.get()
            yield index, event
            if isinstance(event, Failed):
                return
            if isinstance(event, Done):
                self.done[index] = event
                left -= 1

    async def pieces(self, delta, final, usage=None):
        """Streamed: the SSE piece of each event as it comes, `delta(index, text, logprobs)` for new text and
        `final(index, finish_reason)` for a choice's end; then `usage(Usage)` when given. A failure's error ends
        the stream."""
        async for index, event in self.events():
            if isinstance(event, Delta):
                yield delta(index, event.text, event.logprobs)
            elif isinstance(event, Done):
                yield final(index, event.reply.finish_reason)
            else:
                yield sse(P.error_body(event.message, "server_error"))
                return
        if usage is not None:
            yield usage(self.usage())

    def usage(self) -> P.Usage:
        """Each prompt counted once, every choice's tokens (OpenAI's and vLLM's usage with n > 1)."""
        completion = sum(d.reply.completion_tokens for d in self.done.values())
        return P.Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion,
                       total_tokens=self.prompt_tokens + completion)


def sse(obj) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"


def streaming(choices: Choices, pieces):
    """The SSE response of `pieces` (an async iterator of strings), ended with `data: [DONE]`; whenever it stops
    (done, or the client went away) every choice leaves the batch."""
    from fastapi.responses import StreamingResponse

    async def body():
        try:
            async for piece in pieces:
                yield piece
            yield "data: [DONE]\n\n"
        finally:
            choices.cancel()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
