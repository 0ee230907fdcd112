"""What `tunewise serve` lets in, and how it refuses the rest: each refusal is an OpenAI-style JSON error
(`{"error": {"message", "type", "param", "code"}}`) with a 4xx status, and touches no other request.

- the head: uvicorn's h11 parser buffers at most MAX_HEADER_BYTES of request line and headers; a larger head (431)
  or one it cannot parse (400) is answered in JSON by `JsonErrorH11Protocol` instead of uvicorn's text/plain;
- the API key and the declared Content-Length (`GateMiddleware`), before any of the body is read;
- the body: at most --max_request_bytes, the bytes of a chunked body counted as they arrive by FastAPI's route body
  limit: a larger body is a 413, never parsed or kept whole;
- the chat or completion request (`chat_request`, serve/completions.py's `completion_request`, run in a worker
  thread so that the event loop keeps serving): invalid or too deeply nested JSON, fields out of range
  (protocol.py), an unknown model, `n` over --max_batch_size, a conversation the chat template refuses, a prompt
  longer than the context;
- anything else that raises is a JSON 500 (`server_error`) and its traceback goes to the server log.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass

import h11
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from tunewise.args import Sampling
from tunewise.serve import protocol as P

MAX_HEADER_BYTES = 16 * 2**10  # h11's default, passed explicitly: nginx and Node refuse heads of 8-16 KiB too


class ApiError(Exception):
    """A refusal raised anywhere in a route: answered as an OpenAI-style JSON error with this status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
          code: str | None = None) -> JSONResponse:
    # a message may quote the request; a lone surrogate from JSON ("\ud800") cannot be encoded as UTF-8
    message = message.encode("utf-8", "replace").decode()
    return JSONResponse(P.error_body(message, type, param, code), status_code=status)


def install_error_handlers(app, max_request_bytes: int) -> None:
    """Every exception a route or FastAPI raises becomes a JSON error."""
    import logging

    log = logging.getLogger("tunewise.serve")

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return error(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        kind = {401: "authentication_error", 404: "not_found_error"}.get(exc.status_code, "invalid_request_error")
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"Unknown route {request.method} {request.url.path}."
        elif exc.status_code == 413:  # FastAPI's body limit, counting the bytes of a chunked body
            return too_large(max_request_bytes)
        return error(exc.status_code, message, kind)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return error(400, validation_message(exc.errors()))

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        # starlette re-raises after this answer, so uvicorn logs the traceback too; this line names the request
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")


def validation_message(errors: list[dict]) -> str:
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else e.get("msg", "invalid"))
    return "Invalid request: " + "; ".join(parts) + "."


# --- the requests --------------------------------------------------------------------------------------------------
@dataclass
class Chat:
    request: P.ChatCompletionRequest
    prompt_ids: list[int]
    sampling: Sampling


def parse_request(engine, body: bytes, model: type[P.Generating]) -> P.Generating:
    """The JSON body validated as `model` (chat or legacy completion), for a served model, with `n` no more than a
    batch holds; else an ApiError (4xx)."""
    try:
        data = json.loads(body)
    except RecursionError:  # [[[[...]]]]: json's C parser counts its depth against the recursion limit
        raise ApiError(400, "The request body is nested too deeply to parse.") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"The request body is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    try:
        req = model.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        param = ".".join(str(p) for p in errors[0]["loc"]) if errors and errors[0]["loc"] else None
        raise ApiError(400, validation_message(errors), param=param) from None
    except RecursionError:
        raise ApiError(400, "The request is nested too deeply to validate.") from None
    if refused := req.unsupported():
        raise ApiError(400, f"Invalid request: not supported by this server: {', '.join(w for _, w in refused)}.",
                       param=refused[0][0])
    if req.model not in engine.models:
        raise ApiError(404, f"The model `{req.model}` does not exist. Served: {', '.join(engine.models)}.",
                       "not_found_error", "model", "model_not_found")
    most = engine.scheduler.max_batch_size
    if req.n > most:
        raise ApiError(400, f"Invalid request: n: at most {most} choices per request on this server (its "
                            f"--max_batch_size), got {req.n}.", param="n")
    return req


def room_for(engine, prompt_ids: list[int], limit: int | None, where: str) -> int:
    """The tokens the completion may take: `limit`, or all the context leaves; a 400 when it does not fit."""
    context = engine.scheduler.max_length
    room = context - len(prompt_ids)
    if room < 1 or (limit is not None and limit > room):
        asked = f"{len(prompt_ids)} in the {where}" + (f", {limit} in the completion" if limit else "")
        raise ApiError(400, f"This model's maximum context length is {context} tokens; you requested {asked}.",
                       param=where, code="context_length_exceeded")
    return limit or room


def sampling_of(req: P.Generating, max_new_tokens: int) -> Sampling:
    return Sampling(
        temperature=req.temperature if req.temperature is not None else 1.0,
        top_p=req.top_p if req.top_p is not None else 1.0,
        top_k=req.top_k if req.top_k is not None else 0,
        repetition_penalty=req.repetition_penalty or 1.0,
        max_new_tokens=max_new_tokens,
        seed=req.seed,
    )


def chat_request(engine, body: bytes) -> Chat:
    """The body of POST /v1/chat/completions, parsed, validated and tokenized, or an ApiError (4xx). CPU-bound
    (a 2 MiB prompt takes seconds to tokenize): call it from a worker thread."""
    req = parse_request(engine, body, P.ChatCompletionRequest)
    try:
        prompt_ids = engine.prompt_ids(req.model, [m.as_template_message() for m in req.messages])
    except Exception as e:  # the chat template refused the conversation (e.g. roles out of order)
        raise ApiError(400, f"The chat template cannot render these messages: {e}", param="messages") from None
    max_new_tokens = room_for(engine, prompt_ids, req.token_limit, "messages")
    return Chat(req, prompt_ids, sampling_of(req, max_new_tokens))


async def disconnected(request) -> None:
    """Returns when the client has gone. The body has been read, so the next ASGI message is the disconnect (how
    starlette's StreamingResponse watches for it)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# --- in front of the app -------------------------------------------------------------------------------------------
class GateMiddleware:
    """Pure ASGI middleware in front of the routes, answering before any of the body is read: /v1 routes need
    `Authorization: Bearer KEY` with an API key (401), and a Content-Length over the limit is a 413. (FastAPI's body
    limit would refuse that too, but starlette words it in text/plain; it still counts the bytes of a chunked body.)"""

    def __init__(self, app, api_key: str | None, max_request_bytes: int):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            response = self.refusal(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope):
        headers = dict(scope["headers"])
        if self.api_key and scope["path"].startswith("/v1"):
            header = headers.get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
                message = ("Missing API key: send the header 'Authorization: Bearer KEY'." if not header
                           else "Incorrect API key provided.")
                response = error(401, message, "authentication_error", code="invalid_api_key")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_request_bytes:
            return too_large(self.max_request_bytes)
        return None


def too_large(limit: int):
    return error(413, f"The request body is larger than this server's limit of {limit} bytes "
                      "(tunewise serve --max_request_bytes).", code="request_too_large")


class JsonErrorH11Protocol(H11Protocol):
    """uvicorn's h11 protocol (`uvicorn.run(http=...)`), answering a request it cannot parse with a JSON error:
    431 when the head outgrew h11_max_incomplete_event_size (h11's own status hint), 400 otherwise."""

    def send_400_response(self, msg: str) -> None:
        too_large = len(self.conn.trailing_data[0]) > self.config.h11_max_incomplete_event_size
        status, reason = (431, b"Request Header Fields Too Large") if too_large else (400, b"Bad Request")
        message = (f"The request line and headers are larger than this server's limit of "
                   f"{self.config.h11_max_incomplete_event_size} bytes." if too_large
                   else "The request is not valid HTTP/1.1.")
        body = json.dumps(P.error_body(message, code="request_header_too_large" if too_large else None)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=status, headers=headers, reason=reason), h11.Data(data=body),
                      h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()
