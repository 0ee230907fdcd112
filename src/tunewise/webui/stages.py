"""The Train form's stages: the command each runs (`tunewise sft`, `tunewise dpo`, or `tunewise rlhf --rlhf_type
TYPE`), the form's data box it reads, and its own flags, whose defaults are read from the command's argument class
(tunewise.args), so the boxes start at what the command would do without them.

Pure (no Gradio): the Train tab and tunewise.webui.commands read it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    command: tuple[str, ...]  # what follows `tunewise`, before the flags
    data_box: str  # the form field that holds its --dataset
    data_hint: str  # what to give when that box is empty
    flags: tuple[str, ...] = ()  # its own form fields, written as --flag VALUE in this order (empty: left out)
    picks: tuple[tuple[str, str], ...] = ()  # other form fields set when the user picks it (its command needs them)

    @property
    def args_class(self) -> type:
        from tunewise.recipes import recipe

        return recipe(self.name).args_class

    @property
    def loss_types(self) -> tuple[str, ...]:
        """The --loss_type values its command takes (empty: it has no --loss_type box)."""
        if "loss_type" not in self.flags:
            return ()
        from tunewise.args import CPO_LOSS_TYPES, LOSS_TYPES
        from tunewise.args.grpo import GRPO_LOSS_TYPES

        return {"dpo": LOSS_TYPES, "cpo": CPO_LOSS_TYPES, "grpo": GRPO_LOSS_TYPES}[self.name]

    def default(self, flag: str):
        """The command's default for one of its flags (a list flag's as its one value, or "" when empty)."""
        field = {f.name: f for f in dataclasses.fields(self.args_class)}[flag]
        value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if isinstance(value, list):
            return value[0] if len(value) == 1 else ",".join(map(str, value))
        return "" if value is None else value


def _rlhf(kind: str) -> tuple[str, ...]:
    return ("rlhf", "--rlhf_type", kind)


PAIRS_HINT = "preference pairs (e.g. concise)"
STAGES = {stage.name: stage for stage in (
    Stage("sft", ("sft",), "dataset", "e.g. self_cognition#80"),
    Stage("dpo", ("dpo",), "pref_dataset", PAIRS_HINT, ("beta", "loss_type", "rpo_alpha", "adapters")),
    Stage("kto", _rlhf("kto"), "kto_dataset", 'rows with one reply and a label ({"messages": [...], "label": true})',
          ("beta", "desirable_weight", "undesirable_weight", "adapters"),
          picks=(("per_device_train_batch_size", "2"),)),  # KTO's KL term needs another row in the batch
    Stage("orpo", _rlhf("orpo"), "pref_dataset", PAIRS_HINT, ("beta", "adapters")),
    Stage("simpo", _rlhf("simpo"), "pref_dataset", PAIRS_HINT, ("beta", "simpo_gamma", "cpo_alpha", "adapters")),
    Stage("cpo", _rlhf("cpo"), "pref_dataset", PAIRS_HINT, ("beta", "loss_type", "cpo_alpha", "simpo_gamma",
                                                            "adapters")),
    Stage("grpo", _rlhf("grpo"), "grpo_dataset", "prompts with a solution (e.g. additions#200)",
          ("reward_funcs", "num_generations", "max_completion_length", "beta", "loss_type")),
    # a reward model: --center_rewards_coefficient goes in the form's other-flags box
    Stage("rm", _rlhf("rm"), "pref_dataset", PAIRS_HINT, ("adapters",)),
)}
# every stage's own form fields, and the form's data boxes and fields a stage sets (each once)
STAGE_FLAGS = tuple(dict.fromkeys(flag for stage in STAGES.values() for flag in stage.flags))
DATA_BOXES = tuple(dict.fromkeys(stage.data_box for stage in STAGES.values()))
PICKED_FIELDS = tuple(dict.fromkeys(name for stage in STAGES.values() for name, _ in stage.picks))


def stage_of(name: str | None) -> Stage:
    from tunewise.errors import UserError

    if (name or "sft") not in STAGES:
        raise UserError(f"stage {name!r}: expected one of {', '.join(STAGES)}.")
    return STAGES[name or "sft"]


def stage_named(command: str, argv: list[str]) -> str:
    """The stage of a command line (`dpo`, or `rlhf` with its --rlhf_type)."""
    if command != "rlhf":
        return command
    return argv[argv.index("--rlhf_type") + 1]
