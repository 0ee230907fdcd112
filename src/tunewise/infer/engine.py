"""A base model with or without a checkpoint, opened and loaded by the model layer (tunewise.models.checkpoint),
answering chat turns whole or streamed piece by piece (tunewise.models.generate)."""
from __future__ import annotations

from tunewise.models.checkpoint import Checkpoint, load, open_checkpoint
from tunewise.models.generate import Generator


class Engine(Generator):
    """The checkpoint's model (its adapter attached, switchable off) and tokenizer, with its system prompt."""

    def __init__(self, checkpoint: Checkpoint, dtype: str = "auto", attn_implementation: str | None = None):
        from tunewise.models.load import check_model_dir

        check_model_dir(checkpoint.base)
        self.checkpoint = checkpoint
        tokenizer = checkpoint.load_tokenizer()
        super().__init__(load(checkpoint, dtype, attn_implementation).eval(), tokenizer, checkpoint.system)

    @classmethod
    def load(cls, model: str | None = None, adapters: list[str] = (), system: str | None = None,
             template: str | None = None, **kwargs) -> "Engine":
        return cls(open_checkpoint(model, list(adapters), system, template), **kwargs)
