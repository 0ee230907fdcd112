"""The flags of `tunewise serve` (`ServeArgs`), checked when they are parsed: a bad value, or a server that would be
open to the network without an API key, is a UserError (exit code 2) before any model is loaded."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tunewise.errors import raise_problems
from tunewise.flags import below_minimum, flag_field

ENGINES = ("hf", "vllm")
MAX_REQUEST_BYTES = 2 * 2**20  # a 128k-token prompt is about 0.5 MB of English; 50 MB took 90 s to refuse


@dataclass
class ServeArgs:
    """Serve a base model and LoRA adapters over an OpenAI-compatible API (`tunewise serve`)."""

    model: str | None = flag_field(None, "base model (default: the adapters' base from their args.json, else tunewise-tiny)")
    adapters: list[str] = flag_field([], "LoRA checkpoints served by name: NAME=CHECKPOINT ... (a bare CHECKPOINT is named "
                                 "after its folder)")
    served_model_name: str | None = flag_field(None, "the base model's name in /v1/models and requests (default: --model)")
    host: str = flag_field("127.0.0.1", "address to bind; another than loopback (e.g. 0.0.0.0) needs --api-key")
    port: int = flag_field(8000, "TCP port")
    api_key: str | None = flag_field(None, "require 'Authorization: Bearer API_KEY' on /v1 routes")
    allow_no_api_key: bool = flag_field(False, "serve on a non-loopback --host without --api-key (anyone who reaches "
                                               "the port can use the models)")
    max_request_bytes: int = flag_field(MAX_REQUEST_BYTES, "largest request body; a larger one gets a 413 unread")
    engine: str = flag_field("hf", "hf (this process: transformers + peft, batched) | vllm (vLLM's OpenAI server, run by "
                                   "--vllm_python)")
    vllm_python: str | None = flag_field(None, "vLLM: the Python that runs it (default: .venv-vllm/bin/python beside the "
                                               "checkout, made by scripts/setup_vllm.sh, else this Python if it has vLLM)")
    system: str | None = flag_field(None, "system prompt for the base model's chats that have none (adapters use their run's)")
    template: str | None = flag_field(None, "chat template by name (chatml | qwen | qwen3 | llama3 | plain); default: "
                                            "the base's own, or for a base without one the template its adapters "
                                            "were trained with")
    torch_dtype: str = flag_field("auto", "auto | float32 | bfloat16 | float16")
    attn_impl: str | None = flag_field(None, "attention implementation: sdpa | eager")
    max_batch_size: int = flag_field(32, "most requests decoded together in one forward pass")
    batching: str = flag_field("continuous", "continuous | dynamic (new requests wait for an empty batch) | none (one at a time)")
    tensor_parallel_size: int = flag_field(1, "vLLM: GPUs per model")
    max_model_len: int | None = flag_field(None, "vLLM: context length")
    enable_prefix_caching: bool = flag_field(False, "vLLM: reuse the KV cache of shared prompt prefixes")
    enforce_eager: bool | None = flag_field(None, "vLLM: no torch.compile or CUDA graphs; default: true on vLLM's CPU "
                                                  "build (it starts sooner), vLLM's default (false) on a GPU")
    kv_cache_gib: float = flag_field(0.0, "vLLM: KV cache size in GiB; 0 = on vLLM's CPU build 1 GiB (its own default "
                                          "reserves 90% of memory), on a GPU vLLM's default")
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
        problems += below_minimum(self, ("max_batch_size", "tensor_parallel_size", "max_request_bytes"))
        if self.kv_cache_gib < 0:
            problems.append(f"--kv_cache_gib {self.kv_cache_gib}: must be 0 (the default size) or more.")
        if not self.api_key and not self.allow_no_api_key and not is_loopback(self.host):
            problems.append(f"--host {self.host} without --api-key: the models would be open to anyone who can reach "
                            "the port. Pass --api-key KEY (clients send 'Authorization: Bearer KEY'), or "
                            "--allow_no_api_key to serve them openly anyway.")
        raise_problems(problems)

    def open_warning(self) -> str | None:
        """What to print when the server is reachable from the network without a key (--allow_no_api_key)."""
        if self.api_key or is_loopback(self.host):
            return None
        return (f"warning: serving on {self.host}:{self.port} without --api-key (--allow_no_api_key): anyone who can "
                "reach this port can use the models.")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost. 0.0.0.0, ::, a LAN address or any other name is reachable from outside."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
