"""The retention watch's probes, planned with the run (before any model is loaded): which general-skill items it
asks (the embedded model's held-out additions, or --retention_dataset) and the identity the run sets."""
from __future__ import annotations

from dataclasses import dataclass

from tunewise.errors import UserError

BUILTIN_PROBE_STRIDE = 4  # every 4th of the 200 held-out additions: 50 prompts, all five phrasings
GENERAL_MAX_NEW_TOKENS = {"heldout_addition": 8}  # "a+b=c" is at most 7 tokens; datasets get max_new_tokens
IDENTITY_MAX_NEW_TOKENS = 48


@dataclass
class Probes:
    """What the watch asks: general-skill items with references (scored like `tunewise eval`) and the identity."""

    suite: object  # tunewise.evaluate.report.Suite
    max_new_tokens: int
    system: str | None = None

    @property
    def has_identity(self) -> bool:
        return bool(self.suite.target)


def build_probes(args, model_dir: str, zero_stage: int = 0) -> Probes | None:
    """The watch's probes for a run, or None when the watch is off; a UserError when it cannot run."""
    if not args.retention_eval_steps:
        return None
    from tunewise.evaluate.identity import Identity
    from tunewise.evaluate.report import Suite, addition_items, dataset_items
    from tunewise.models.load import builtin_meta

    meta = builtin_meta(model_dir)
    if args.retention_dataset:
        general, kind = dataset_items(args.retention_dataset, args.seed), "dataset:contains"
    elif meta:
        general, kind = addition_items()[::BUILTIN_PROBE_STRIDE], "heldout_addition"
    else:
        raise UserError(f"--retention_eval_steps {args.retention_eval_steps}: {args.model} has no built-in probes; "
                        "give --retention_dataset FILE with general-skill prompts and reference answers "
                        "({\"query\", \"response\"} rows; a reply is right when it contains the reference).")
    if not general:
        raise UserError(f"--retention_dataset {' '.join(args.retention_dataset)}: no rows.")
    if zero_stage >= 3:
        raise UserError("--retention_eval_steps with ZeRO-3 (--deepspeed zero3): the watch generates on the "
                        "partitioned model, which tunewise does not do yet; use zero2 or no DeepSpeed.")
    target = Identity(list(args.model_name), list(args.model_author))
    old = Identity.from_dict(meta.get("default_identity")) if meta else None
    suite = Suite(target, old or None, general=general, general_kind=kind)
    return Probes(suite, GENERAL_MAX_NEW_TOKENS.get(kind, args.retention_max_new_tokens), args.system)
