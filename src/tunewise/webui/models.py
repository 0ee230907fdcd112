"""The models Chat and Compare offer: the batching engine's base model and adapters, plus the LoRA checkpoints found
under --output_dir, loaded as adapters on first use."""
from __future__ import annotations

import threading
from pathlib import Path

from tunewise.models.checkpoint import find_checkpoints
from tunewise.webui.args import WebuiArgs


class ModelPool:
    """The batching engine plus checkpoints loaded on demand by their path."""

    def __init__(self, args: WebuiArgs, engine=None):
        from tunewise.serve.args import ServeArgs
        from tunewise.serve.engine import build_engine

        self.output_dir = Path(args.output_dir)
        self.engine = engine or build_engine(ServeArgs(model=args.model, adapters=list(args.adapters),
                                                       system=args.system, torch_dtype=args.torch_dtype))
        self._lock = threading.Lock()

    def choices(self) -> list[str]:
        names = list(self.engine.models)
        loaded = {s.path for s in self.engine.models.values()}
        for ckpt in find_checkpoints(self.output_dir):
            if str(ckpt.resolve()) not in loaded and str(ckpt) not in names:
                names.append(str(ckpt))
        return names

    def name_for(self, choice: str) -> str:
        """The engine's name for a dropdown choice; a checkpoint path is loaded as an adapter the first time."""
        if choice in self.engine.models:
            return choice
        from tunewise.serve.engine import parse_adapters

        with self._lock:
            if choice in self.engine.models:
                return choice
            spec = parse_adapters([f"{choice}={choice}"])[0]
            self.engine.add_adapter(choice, spec.path, spec.system)
        return choice


