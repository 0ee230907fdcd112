"""The model flags: which model, in which dtype and attention implementation, and how its chats are templated."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.flags import flag_field, not_one_of

TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN_IMPLS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention")
TEMPLATE_NAMES = ("chatml", "qwen", "qwen3", "llama3", "plain")  # tunewise.data.templates.TEMPLATES


@dataclass(frozen=True)
class ModelArgs:
    model: str = flag_field("tunewise-tiny", "base model: a local HF directory, a hub id, or the built-in tunewise-tiny")
    torch_dtype: str = flag_field("auto", "auto | float32 | bfloat16 | float16 (auto: bfloat16 on a GPU that computes "
                                          "it, float32 on a CPU; see the plan)")
    attn_impl: str | None = flag_field(None, "attention implementation: sdpa | eager | flash_attention_2 | flash_attention_3 | "
                                             "flex_attention (default: chosen per device for packed batches, see the plan)")
    system: str | None = flag_field(None, "system prompt for rows (and chats) that have none; a value ending in .txt "
                                          "is read from that file (as ms-swift does)")
    template: str | None = flag_field(None, "chat template: " + " | ".join(TEMPLATE_NAMES) + " (default: the "
                                            "tokenizer's own; needed for a base model that has none)")

    def read_system_file(self) -> list[str]:
        """--system FILE.txt: the file's text becomes the system prompt (ms-swift's rule); the problem when it cannot
        be read."""
        from pathlib import Path

        if not (self.system or "").endswith(".txt"):
            return []
        path = Path(self.system).expanduser()
        try:
            object.__setattr__(self, "system", path.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError) as e:
            return [f"--system {self.system}: a value ending in .txt is read as a file, and this one cannot be read "
                    f"({getattr(e, 'strerror', None) or e})."]
        return []

    def model_problems(self) -> list[str]:
        """The problems of the model flags, found before anything is loaded or written."""
        return not_one_of(self, {"torch_dtype": TORCH_DTYPES, "attn_impl": ATTN_IMPLS, "template": TEMPLATE_NAMES})
