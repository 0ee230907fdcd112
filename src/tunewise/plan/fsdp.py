"""Reconcile `--fsdp` and `--fsdp_config` with the flags before launch: PyTorch FSDP2 (``fully_shard``) through the
transformers Trainer and accelerate, configured the way transformers 5.23 reads ``TrainingArguments.fsdp_config``.

Spelling (transformers' and ms-swift's):

* ``--fsdp "full_shard auto_wrap"``: transformers' option words: ``full_shard`` (weights, gradients and optimizer
  state sharded; ZeRO-3-like) or ``shard_grad_op`` (the weights stay gathered between forward and backward;
  ZeRO-2-like), ``auto_wrap`` (one FSDP unit per decoder layer; transformers 5 wraps by default, so the word only
  confirms it) and ``offload`` (weights, gradients and the optimizer step on the CPU). The FSDP1-only words
  (``no_shard``, ``hybrid_shard``, ``hybrid_shard_zero2``) are refused: transformers 5.23 deprecates FSDP1.
* ``--fsdp fsdp2``: ms-swift's preset name, here ``full_shard auto_wrap``. ms-swift's own preset file also sets
  SHARDED_STATE_DICT, activation checkpointing and CPU-RAM-efficient loading; tunewise keeps every checkpoint a plain
  peft adapter or safetensors model (FULL_STATE_DICT) and leaves activation checkpointing to the flags.
* ``--fsdp FILE.json``: an ms-swift FSDP file, ``{"fsdp": "full_shard auto_wrap", "fsdp_config": {...}}`` (keys
  starting with ``_`` are comments).
* ``--fsdp_config FILE.json`` or ``--fsdp_config '{"reshard_after_forward": true}'``: transformers' fsdp_config keys
  (an ``fsdp_`` prefix is dropped, as transformers does; accelerate's ``offload_params`` means ``cpu_offload``).

Policy (``reconcile``):

* A key transformers would ignore or that tunewise cannot honour is an error before launch naming the file and the
  key: unknown keys (with the valid ones listed), FSDP1-only keys, XLA, ``version`` other than 2,
  SHARDED_STATE_DICT (tunewise infer/export/eval read full checkpoints), ``cpu_ram_efficient_loading`` (every rank
  loads the model before the Trainer exists, so it would save nothing).
* A word of ``--fsdp`` that contradicts the config (``offload`` vs ``cpu_offload: false``, ``full_shard`` vs
  ``reshard_after_forward: false``, ``auto_wrap`` vs ``NO_WRAP``), or ``--gradient_checkpointing`` given on the
  command line against the config's ``activation_checkpointing``, is an error naming the file, the key and both
  values. transformers itself lets the config win silently (``setdefault``).
* The wrapped layer class defaults to the model's ``_no_split_modules`` (Qwen2: ``Qwen2DecoderLayer``) and is
  written into the config, so the plan shows it; a class the model does not define is an error.
* Activation checkpointing: ``--gradient_checkpointing true`` uses the model's own (transformers'
  ``activation_checkpointing`` argument); ``"activation_checkpointing": true`` in the config uses FSDP's, which
  accelerate 1.15 applies with ``checkpoint_wrapper(layer, preserve_rng_state=False)`` (accelerate/utils/fsdp_utils.py
  line 722, ``fsdp2_apply_ac``): the backward recomputes each layer with new dropout masks, so with any dropout active
  the gradients belong to another forward than the loss (measured: LoRA dropout 0.05, step-1 gradient norm 0.961
  instead of 1.049; equal with dropout 0). It is refused while a dropout is active.
* ``offload`` without CUDA is an error: there is no device memory to save, and PyTorch's FSDP2 offload pins host
  memory, which needs an accelerator (torch 2.13 distributed/fsdp/_fully_shard/_fsdp_param.py line 315, in
  ``_init_sharded_param``: "Cannot access accelerator device when none is available").
* FSDP with DeepSpeed, and FSDP in one process (nothing to shard across), are errors.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunewise.errors import UserError, raise_problems
from tunewise.files import json_object, read_json_object

WORDS = {"full_shard": "shard weights, gradients and optimizer state (ZeRO-3-like)",
         "shard_grad_op": "shard gradients and optimizer state; weights stay gathered from forward to backward "
                          "(ZeRO-2-like)",
         "auto_wrap": "one FSDP unit per decoder layer (the default)",
         "offload": "weights, gradients and the optimizer step on the CPU (needs CUDA)"}
FSDP1_WORDS = ("no_shard", "hybrid_shard", "hybrid_shard_zero2")
PRESETS = {"fsdp2": "full_shard auto_wrap"}  # ms-swift's name (swift/config/fsdp2.json)
WRAP_POLICIES = ("TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP", "NO_WRAP")
# transformers 5.23 TrainingArguments fsdp_config keys for FSDP2 (training_args.py, _process_fsdp_args)
KEYS = ("version", "reshard_after_forward", "cpu_offload", "activation_checkpointing", "state_dict_type",
        "auto_wrap_policy", "transformer_layer_cls_to_wrap", "min_num_params", "cpu_ram_efficient_loading")
BOOL_KEYS = ("reshard_after_forward", "cpu_offload", "activation_checkpointing", "cpu_ram_efficient_loading")
FSDP1_KEYS = ("sharding_strategy", "backward_prefetch", "forward_prefetch", "use_orig_params", "sync_module_states",
              "limit_all_gathers")
ALIASES = {"offload_params": "cpu_offload"}  # accelerate's config name


@dataclass(frozen=True)
class ModelLayout:
    """What FSDP needs to know of the model, read before it is loaded (tunewise.models.load.model_layout)."""

    architecture: str  # e.g. Qwen2ForCausalLM
    no_split_modules: tuple[str, ...]  # the decoder layer classes transformers never splits: the default wrap unit
    module_classes: frozenset[str]  # nn.Module classes its modeling code defines: valid wrap classes
    dropouts: tuple[tuple[str, float], ...] = ()  # active (> 0) dropouts in training: ("lora_dropout", 0.05), ...


@dataclass(frozen=True)
class FsdpPlan:
    """``config``: pass as ``TrainingArguments(fsdp=True, fsdp_config=config)``. ``model_checkpointing``: pass as
    ``activation_checkpointing`` (the model's own, RNG-preserving recomputation). ``sources``: flags the config set."""

    config: dict
    label: str
    words: tuple[str, ...]
    gradient_checkpointing: bool  # activations are recomputed (by the model or by FSDP)
    sources: dict = field(default_factory=dict)

    @property
    def model_checkpointing(self) -> bool:
        return self.gradient_checkpointing and not self.config["activation_checkpointing"]

    def describe(self) -> str:
        """The engine as the plan shows it, e.g. "FSDP full shard (auto-wrap Qwen2DecoderLayer, CPU offload)"."""
        c = self.config
        policy = c["auto_wrap_policy"]
        wrap = (f"auto-wrap {', '.join(c['transformer_layer_cls_to_wrap'])}" if policy == "TRANSFORMER_BASED_WRAP"
                else f"auto-wrap modules of {c['min_num_params']:,}+ parameters" if policy == "SIZE_BASED_WRAP"
                else "no auto-wrap: the whole model is one unit")
        extra = [wrap] + (["CPU offload"] if c["cpu_offload"] else []) + (
            ["FSDP activation checkpointing"] if c["activation_checkpointing"] else [])
        return f"FSDP {'full shard' if c['reshard_after_forward'] else 'shard grad-op'} ({', '.join(extra)})"


def _read_json(spec: str, what: str) -> tuple[dict, str]:
    """(object, label) of an inline JSON object or a JSON file."""
    inline = spec.lstrip().startswith("{")
    label = f"{what} (inline JSON)" if inline else f"{what} {spec}"
    if not inline and not Path(spec).is_file():
        raise UserError(f"{what} {spec}: no such file (give a JSON file or an inline JSON object).")
    return (json_object(spec, label) if inline else read_json_object(spec, label)), label


def load(fsdp: str, fsdp_config: str | None) -> tuple[list[str], dict, str]:
    """(option words, raw config, label of where the config came from) of --fsdp and --fsdp_config."""
    spec = fsdp.strip()
    config, label = {}, f"--fsdp {fsdp}"
    if spec in PRESETS:
        spec = PRESETS[spec]
    elif spec.endswith(".json") or Path(spec).is_file():  # an ms-swift FSDP file: {"fsdp": ..., "fsdp_config": ...}
        whole, label = _read_json(spec, "--fsdp")
        unknown = sorted(k for k in whole if k not in ("fsdp", "fsdp_config") and not k.startswith("_"))
        if unknown:
            raise UserError(f"{label}: unknown keys {', '.join(unknown)}; an FSDP file has \"fsdp\" (the option "
                            "words) and \"fsdp_config\" (an object), as ms-swift's.")
        if fsdp_config:
            raise UserError(f"{label} holds an fsdp_config and --fsdp_config {fsdp_config} gives another; give one.")
        spec, config = whole.get("fsdp", PRESETS["fsdp2"]), whole.get("fsdp_config", {})
        if not isinstance(spec, str) or not isinstance(config, dict):
            raise UserError(f'{label}: "fsdp" must be a string of option words and "fsdp_config" an object.')
    if fsdp_config:
        config, label = _read_json(fsdp_config, "--fsdp_config")
    return spec.split(), config, label


def _normalized(raw: dict, label: str) -> dict:
    """The config with transformers' key spellings (no fsdp_ prefix, aliases resolved), every key checked."""
    config, problems = {}, []
    for key, value in raw.items():
        name = key[5:] if key.startswith("fsdp_") else key
        name = ALIASES.get(name, name)
        if name in config:
            problems.append(f"{key} repeats {name}")
        config[name] = value
    for key, value in config.items():
        if key in FSDP1_KEYS:
            problems.append(f"{key} is an FSDP1 setting (transformers 5.23 deprecates FSDP1; tunewise runs FSDP2)")
        elif key.startswith("xla"):
            problems.append(f"{key}: XLA FSDP is not supported")
        elif key not in KEYS:
            problems.append(f"{key} is not an fsdp_config key (valid: {', '.join(KEYS)})")
        elif key in BOOL_KEYS and not isinstance(value, bool):
            problems.append(f"{key} = {json.dumps(value)} must be true or false")
    raise_problems(problems, f"{label}: ", "; ", ".")
    return config


def reconcile(fsdp: str, fsdp_config: str | None, *, world_size: int, layout: ModelLayout, cuda: bool,
              gradient_checkpointing: bool, gradient_checkpointing_source: str = "default",
              deepspeed: str | None = None) -> FsdpPlan:
    """The FSDP plan of --fsdp/--fsdp_config and the flags, or a UserError naming every problem (module docstring)."""
    if deepspeed:
        raise UserError(f"--fsdp {fsdp} and --deepspeed {deepspeed}: two sharding engines; give one.")
    words, raw, label = load(fsdp, fsdp_config)
    unknown = [w for w in words if w not in WORDS]
    if unknown or not words:
        fsdp1 = [w for w in unknown if w in FSDP1_WORDS]
        raise UserError(f"--fsdp {fsdp}: " + (f"{', '.join(fsdp1)} is FSDP1 only (deprecated by transformers 5.23; "
                                               "tunewise runs FSDP2). " if fsdp1 else "")
                        + "expected option words among " + "; ".join(f"{w} ({why})" for w, why in WORDS.items())
                        + f", or a preset ({', '.join(PRESETS)}), or an FSDP JSON file.")
    if "full_shard" in words and "shard_grad_op" in words:
        raise UserError(f"--fsdp {fsdp}: full_shard and shard_grad_op are two sharding strategies; give one.")
    config = _normalized(raw, label)
    problems = []

    def agree(key, value, why):
        if key in config and config[key] != value:
            problems.append(f"{key} = {json.dumps(config[key])} but {why} needs {json.dumps(value)}")
        config[key] = value

    for word, key, value in (("full_shard", "reshard_after_forward", True),
                             ("shard_grad_op", "reshard_after_forward", False), ("offload", "cpu_offload", True)):
        if word in words:
            agree(key, value, f"--fsdp {word}")
    config.setdefault("reshard_after_forward", True)
    config.setdefault("cpu_offload", False)
    if config.get("version", 2) != 2:
        problems.append(f"version = {json.dumps(config['version'])}: tunewise runs FSDP2 (transformers 5.23 "
                        "deprecates FSDP1)")
    config["version"] = 2
    if config.setdefault("state_dict_type", "FULL_STATE_DICT") != "FULL_STATE_DICT":
        problems.append(f"state_dict_type = {json.dumps(config['state_dict_type'])}: tunewise needs FULL_STATE_DICT, "
                        "so every checkpoint is a plain peft adapter or safetensors model (SHARDED_STATE_DICT writes "
                        "per-rank shards that infer, export and eval cannot read)")
    if config.setdefault("cpu_ram_efficient_loading", False):
        problems.append("cpu_ram_efficient_loading = true: every rank loads the model before the Trainer exists, so "
                        "it would save no memory; set it to false")
    policy = config.setdefault("auto_wrap_policy", "TRANSFORMER_BASED_WRAP")
    if policy not in WRAP_POLICIES:
        problems.append(f"auto_wrap_policy = {json.dumps(policy)}: expected one of {', '.join(WRAP_POLICIES)}")
    if "auto_wrap" in words and policy == "NO_WRAP":
        problems.append('auto_wrap_policy = "NO_WRAP" but --fsdp auto_wrap wraps each layer')
    classes = config.get("transformer_layer_cls_to_wrap")
    classes = [classes] if isinstance(classes, str) else classes
    min_params = config.get("min_num_params", 0)
    if policy == "TRANSFORMER_BASED_WRAP":
        if "min_num_params" in config:
            problems.append("min_num_params is read only with auto_wrap_policy SIZE_BASED_WRAP")
        if classes is None:
            classes = list(layout.no_split_modules)
            if not classes:
                problems.append(f"{layout.architecture} names no decoder layer class (_no_split_modules); give "
                                "transformer_layer_cls_to_wrap")
        elif not classes or not all(isinstance(c, str) for c in classes):
            problems.append(f"transformer_layer_cls_to_wrap = {json.dumps(classes)} must be class names")
        else:
            missing = [c for c in classes if c not in layout.module_classes]
            if missing:
                problems.append(f"transformer_layer_cls_to_wrap names {', '.join(missing)}, which "
                                f"{layout.architecture} does not have (its decoder layer: "
                                f"{', '.join(layout.no_split_modules) or 'unknown'})")
        config["transformer_layer_cls_to_wrap"] = classes
    else:
        if classes is not None:
            problems.append(f"transformer_layer_cls_to_wrap is read only with TRANSFORMER_BASED_WRAP, not {policy}")
        if policy == "SIZE_BASED_WRAP" and (isinstance(min_params, bool) or not isinstance(min_params, int)
                                            or min_params <= 0):
            problems.append(f"min_num_params = {json.dumps(min_params)}: SIZE_BASED_WRAP needs a positive count "
                            "(accelerate ignores 0, leaving the model unwrapped)")
        config.pop("transformer_layer_cls_to_wrap", None)
    sources = {}
    given_gc = gradient_checkpointing_source not in ("default", "model")
    if "activation_checkpointing" in config:
        fsdp_ac = config["activation_checkpointing"]
        if given_gc and gradient_checkpointing != fsdp_ac:
            problems.append(f"activation_checkpointing = {json.dumps(fsdp_ac)} but --gradient_checkpointing "
                            f"{str(gradient_checkpointing).lower()} ({gradient_checkpointing_source}) says the opposite")
        if fsdp_ac and layout.dropouts:
            active = ", ".join(f"{name} {value:g}" for name, value in layout.dropouts)
            problems.append(f"activation_checkpointing = true with dropout active ({active}): accelerate's FSDP "
                            "checkpointing does not preserve the RNG state, so the backward would recompute other "
                            "dropout masks than the forward used. Set the dropout to 0, or drop the key and use "
                            "--gradient_checkpointing true (the model's own checkpointing)")
        if fsdp_ac and not given_gc:
            sources["gradient_checkpointing"] = "fsdp_config"
        gradient_checkpointing = gradient_checkpointing or fsdp_ac
    else:
        config["activation_checkpointing"] = False  # recomputation, if asked, is the model's (model_checkpointing)
    raise_problems(problems, f"FSDP config {label} contradicts the flags or cannot be honoured: ", "; ", ".")
    if config["cpu_offload"] and not cuda:
        raise UserError(f"--fsdp {fsdp}: CPU offload needs CUDA: without a GPU everything is on the CPU already, and "
                        "PyTorch's FSDP2 offload pins host memory, which needs an accelerator ('Cannot access "
                        "accelerator device when none is available'). Drop offload (or cpu_offload).")
    if world_size < 2:
        raise UserError(f"--fsdp {fsdp} with one process: FSDP shards the model across processes, so one process "
                        "would only add its overhead. Give --nproc_per_node 2 or more (or --nnodes), or drop --fsdp.")
    return FsdpPlan(config, label, tuple(words), gradient_checkpointing, sources)
