"""The subset of OpenAI's chat-completions API that `tunewise serve` speaks, as pydantic models.

Requests are validated here; anything malformed becomes an OpenAI-style error body
(`{"error": {"message", "type", "param", "code"}}`) with a 4xx status, never a traceback.
Fields a client may send that tunewise does not implement are accepted and ignored when they cannot change the
answer (`user`, `metadata`, `store`, ...), and refused with a 400 when they would (`n > 1`, `tools`, `logprobs`).
`top_k`, `repetition_penalty` and `ignore_eos` are accepted as extra parameters, as vLLM does.
"""
from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_STOP = 4
MAX_STOP_CHARS = 256  # each stop string is searched for at every step and held back while it may still begin
MAX_SEED = 2**63 - 1  # torch.Generator takes 64 bits; a larger seed would fail the request's whole batch


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


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list | None = None
    tool_choice: str | dict | None = None
    response_format: dict | None = None
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

    @model_validator(mode="after")
    def _supported(self):
        unsupported = []
        if self.n != 1:
            unsupported.append("n > 1")
        if self.tools:
            unsupported.append("tools")
        if self.tool_choice not in (None, "none"):
            unsupported.append("tool_choice")
        if self.logprobs:
            unsupported.append("logprobs")
        if self.response_format and self.response_format.get("type", "text") != "text":
            unsupported.append(f"response_format {self.response_format.get('type')!r}")
        if self.presence_penalty or self.frequency_penalty:
            unsupported.append("presence_penalty/frequency_penalty (use repetition_penalty)")
        if unsupported:
            raise ValueError(f"not supported by this server: {', '.join(unsupported)}")
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must not be an assistant message (continuing a reply is not supported)")
        return self

    @property
    def stop_strings(self) -> list[str]:
        return list(self.stop or [])

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# --- responses ------------------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


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


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def now() -> int:
    return int(time.time())


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return ErrorResponse(error=ErrorInfo(message=message, type=type, param=param, code=code)).model_dump()
