"""The subset of OpenAI's chat-completions and legacy completions APIs that `tunewise serve` speaks, as pydantic
models.

Requests are validated here; anything malformed becomes an OpenAI-style error body
(`{"error": {"message", "type", "param", "code"}}`) with a 4xx status, never a traceback.
Fields a client may send that tunewise does not implement are accepted and ignored when they cannot change the
answer (`user`, `metadata`, `store`, ...), and refused with a 400 when they would (`tools`, `logit_bias`,
`suffix`, `best_of`, ...). `top_k`, `repetition_penalty` and `ignore_eos` are accepted as extra parameters, as vLLM
does. The server's own limits (`n` at most --max_batch_size, the context length) are checked in serve/limits.py.
"""
from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP = 4
MAX_STOP_CHARS = 256  # each stop string is searched for at every step and held back while it may still begin
MAX_SEED = 2**63 - 1  # torch.Generator takes 64 bits; a larger seed would fail the request's whole batch
MAX_LOGPROBS = 20  # top alternatives per token: OpenAI's chat limit, vLLM's default --max-logprobs
MAX_PROMPTS = 256  # prompts in one legacy completions request


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def as_template_message(self) -> dict:
        """The message as a chat template wants it ("developer" is OpenAI's new name for "system")."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text()}


class StreamOptions(BaseModel):
    include_usage: bool = False


class Generating(BaseModel):
    """The sampling fields the chat and the legacy completions requests share."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict | None = None
    # extras (vLLM accepts these too)
    top_k: int | None = Field(default=None, ge=-1, le=2**31 - 1)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    ignore_eos: bool = False  # keep generating past the end-of-turn token (benchmarks)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("a stop sequence must not be empty")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop sequence must be at most {MAX_STOP_CHARS} characters")
        return stops

    def unsupported(self) -> list[tuple[str, str]]:
        """(field, what) for each thing this request asks that this server does not do: serve/limits.py answers
        a 400 naming them all."""
        unsupported = []
        if self.presence_penalty or self.frequency_penalty:
            unsupported.append(("presence_penalty" if self.presence_penalty else "frequency_penalty",
                                "presence_penalty/frequency_penalty (use repetition_penalty)"))
        if self.logit_bias:
            unsupported.append(("logit_bias", "logit_bias"))
        return unsupported

    @property
    def stop_strings(self) -> list[str]:
        return list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(Generating):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    tools: list | None = None
    tool_choice: str | dict | None = None
    response_format: dict | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top_needs_logprobs(cls, value, info):
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return value

    def unsupported(self) -> list[tuple[str, str]]:
        unsupported = super().unsupported()
        if self.tools:
            unsupported.append(("tools", "tools"))
        if self.tool_choice not in (None, "none"):
            unsupported.append(("tool_choice", "tool_choice"))
        if self.response_format and self.response_format.get("type", "text") != "text":
            unsupported.append(("response_format", f"response_format {self.response_format.get('type')!r}"))
        return unsupported

    @model_validator(mode="after")
    def _continuing(self):
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must not be an assistant message (continuing a reply is not supported)")
        return self

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def top_count(self) -> int | None:
        """Top alternatives per token to report, None without logprobs."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Generating):
    """POST /v1/completions: raw text continued, no chat template (as vLLM does)."""

    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)  # OpenAI's and vLLM's default for this API; null: the context
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, value):
        if isinstance(value, list):
            if not value:
                raise ValueError("the list of prompts must not be empty")
            if all(isinstance(p, (int, list)) for p in value):
                raise ValueError("token-id prompts are not supported by this server: send the prompt as text")
            if any(not isinstance(p, str) for p in value):
                raise ValueError("each prompt must be a string")
            if len(value) > MAX_PROMPTS:
                raise ValueError(f"at most {MAX_PROMPTS} prompts in one request")
        return value

    def unsupported(self) -> list[tuple[str, str]]:
        unsupported = super().unsupported()
        if self.suffix:
            unsupported.append(("suffix", "suffix (insertion)"))
        if self.best_of is not None and self.best_of != self.n:
            unsupported.append(("best_of", "best_of other than n"))
        if self.echo and self.logprobs is not None:
            unsupported.append(("echo", "echo with logprobs (the prompt's logprobs)"))
        return unsupported

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# --- responses ------------------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class Envelope(BaseModel):
    """What every completion, and each chunk of a streamed one, is made of; each kind names its own object and
    choices (a streamed chunk: one choice's piece, usage None)."""

    id: str
    object: str
    created: int
    model: str
    choices: list
    usage: Usage | None = None


class ChatCompletion(Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(Envelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None = None  # None in a streamed piece before the last
    logprobs: CompletionLogprobs | None = None


class Completion(Envelope):
    """A legacy completion, and (with one choice's piece, usage None) each chunk of a streamed one."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tunewise"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


def completion_id(prefix: str = "chatcmpl-") -> str:
    return prefix + uuid.uuid4().hex[:24]


def now() -> int:
    return int(time.time())


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code)).model_dump()
