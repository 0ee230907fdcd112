"""The API-key guard `tunewise serve --engine vllm --api-key` puts in front of vLLM's server (vLLM's `--middleware`).

vLLM's own --api-key guards only /v1, /v2 and /inference: /invocations (the same chat and completions), /tokenize,
/metrics, /scale_elastic_ep and others stay open, which would break the rule that a server reachable from the network
needs its key. This guard wants `Authorization: Bearer KEY` on every route but /health (the HF engine's rule) and
refuses others with OpenAI's 401 error object. The key comes from $TUNEWISE_VLLM_API_KEY (not the command line).

It runs inside vLLM's Python, which has no tunewise: serve/vllm.py copies this file beside the chat template and puts
that folder on vLLM's PYTHONPATH as the module `tunewise_vllm_guard`. Standard library only.
"""
import hmac
import json
import os

KEY_ENV = "TUNEWISE_VLLM_API_KEY"
OPEN_PATHS = ("/health",)
REFUSAL = json.dumps({"error": {"message": "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                                "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}).encode()


class KeyGuard:
    """Pure ASGI middleware: HTTP requests without the key get a 401, websockets are closed before they open."""

    def __init__(self, app):
        key = os.environ.get(KEY_ENV)
        if not key:  # loaded without a key: refuse to start rather than serve unguarded
            raise RuntimeError(f"tunewise_vllm_guard: ${KEY_ENV} is not set")
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS or self._allowed(scope):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(REFUSAL)).encode()),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": REFUSAL})

    def _allowed(self, scope) -> bool:
        given = next((value for name, value in scope["headers"] if name.lower() == b"authorization"), b"")
        return hmac.compare_digest(given, self.expected)
