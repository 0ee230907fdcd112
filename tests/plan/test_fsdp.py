"""tunewise.plan.fsdp: --fsdp/--fsdp_config reconciled with the flags before launch (no training here). The
config it makes is the one transformers 5.23 turns into accelerate's FSDP plugin; every contradiction, unknown key
and value tunewise cannot honour is a UserError naming the file and the key."""
import dataclasses
import json

import pytest

from tunewise.errors import UserError
from tunewise.plan.fsdp import ModelLayout, reconcile

QWEN2 = ModelLayout("Qwen2ForCausalLM", ("Qwen2DecoderLayer",),
                    frozenset({"Qwen2DecoderLayer", "Qwen2Attention", "Qwen2MLP", "Qwen2RMSNorm"}))
DEFAULT_CONFIG = {"reshard_after_forward": True, "cpu_offload": False, "version": 2,
                  "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False,
                  "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"],
                  "activation_checkpointing": False}


def plan(fsdp="full_shard auto_wrap", config=None, *, world_size=2, layout=QWEN2, cuda=False, gc=False,
         gc_source="default", deepspeed=None):
    return reconcile(fsdp, config, world_size=world_size, layout=layout, cuda=cuda, gradient_checkpointing=gc,
                     gradient_checkpointing_source=gc_source, deepspeed=deepspeed)


def write(tmp_path, obj, name="fsdp.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return str(path)


def refused(*match, **kw):
    with pytest.raises(UserError) as e:
        plan(**kw)
    for text in match:
        assert text in str(e.value), str(e.value)
    return str(e.value)


# ---------------------------------------------------------------- the option words and presets
def test_full_shard_auto_wrap_fills_the_decoder_layer_and_full_checkpoints():
    p = plan()
    assert p.config == DEFAULT_CONFIG
    assert p.describe() == "FSDP full shard (auto-wrap Qwen2DecoderLayer)"
    assert p.words == ("full_shard", "auto_wrap") and not p.gradient_checkpointing and p.sources == {}
    assert plan("fsdp2").config == DEFAULT_CONFIG  # ms-swift's preset name
    assert plan("full_shard").config == DEFAULT_CONFIG  # transformers 5 auto-wraps by default


def test_shard_grad_op_and_offload():
    assert plan("shard_grad_op auto_wrap").config["reshard_after_forward"] is False
    assert plan("shard_grad_op auto_wrap").describe() == "FSDP shard grad-op (auto-wrap Qwen2DecoderLayer)"
    p = plan("full_shard auto_wrap offload", cuda=True)
    assert p.config["cpu_offload"] is True
    assert p.describe() == "FSDP full shard (auto-wrap Qwen2DecoderLayer, CPU offload)"
    # without CUDA: nothing to offload from, and torch's FSDP2 offload pins memory, which needs an accelerator
    refused("CPU offload needs CUDA", "Cannot access accelerator device", fsdp="full_shard auto_wrap offload")


def test_unknown_and_fsdp1_words_list_the_valid_ones():
    text = refused("--fsdp full_shard autowrap", "full_shard (", "shard_grad_op (", "auto_wrap (", "offload (",
                   "fsdp2", fsdp="full_shard autowrap")
    assert "FSDP1" not in text
    refused("hybrid_shard is FSDP1 only", fsdp="hybrid_shard auto_wrap")
    refused("expected option words", fsdp=" ")
    refused("two sharding strategies", fsdp="full_shard shard_grad_op")


def test_fsdp_with_deepspeed_or_one_process_is_refused():
    refused("--deepspeed zero3", "give one", deepspeed="zero3")
    refused("with one process", "--nproc_per_node 2", world_size=1)


# ---------------------------------------------------------------- --fsdp_config: keys, values, contradictions
def test_config_keys_take_transformers_and_accelerate_spellings(tmp_path):
    path = write(tmp_path, {"fsdp_version": 2, "offload_params": True, "fsdp_transformer_layer_cls_to_wrap": "Qwen2MLP"})
    p = plan("full_shard auto_wrap", path, cuda=True)
    assert p.config["cpu_offload"] is True and p.config["transformer_layer_cls_to_wrap"] == ["Qwen2MLP"]
    assert p.label == f"--fsdp_config {path}"
    inline = plan("full_shard", '{"reshard_after_forward": true}')
    assert inline.config == DEFAULT_CONFIG and inline.label == "--fsdp_config (inline JSON)"


def test_a_word_that_contradicts_the_config_names_the_file_the_key_and_both_values(tmp_path):
    path = write(tmp_path, {"cpu_offload": False, "reshard_after_forward": False})
    text = refused(f"FSDP config --fsdp_config {path}", "cpu_offload = false but --fsdp offload needs true",
                   "reshard_after_forward = false but --fsdp full_shard needs true",
                   fsdp="full_shard auto_wrap offload", config=path, cuda=True)
    assert text.count(";") >= 1  # every problem at once
    refused("reshard_after_forward = true but --fsdp shard_grad_op needs false", fsdp="shard_grad_op",
            config='{"reshard_after_forward": true}')
    refused('auto_wrap_policy = "NO_WRAP" but --fsdp auto_wrap', config='{"auto_wrap_policy": "NO_WRAP"}')


def test_unknown_fsdp1_xla_and_mistyped_keys(tmp_path):
    refused("activation_cpu_offload is not an fsdp_config key (valid: version, reshard_after_forward",
            config='{"activation_cpu_offload": true}')
    refused("backward_prefetch is an FSDP1 setting", config='{"fsdp_backward_prefetch": "BACKWARD_PRE"}')
    refused("xla: XLA FSDP is not supported", config='{"xla": true}')
    refused('cpu_offload = "yes" must be true or false', config='{"cpu_offload": "yes"}')
    refused("repeats cpu_offload", config='{"cpu_offload": false, "offload_params": false}')


def test_values_tunewise_cannot_honour():
    refused("version = 1: tunewise runs FSDP2", config='{"version": 1}')
    refused("tunewise needs FULL_STATE_DICT", "per-rank shards", config='{"state_dict_type": "SHARDED_STATE_DICT"}')
    refused("cpu_ram_efficient_loading = true", config='{"cpu_ram_efficient_loading": true}')
    refused('auto_wrap_policy = "BY_LAYER": expected one of TRANSFORMER_BASED_WRAP', fsdp="full_shard",
            config='{"auto_wrap_policy": "BY_LAYER"}')


def test_wrap_classes_policies_and_sizes():
    refused("names LlamaDecoderLayer, which Qwen2ForCausalLM does not have (its decoder layer: Qwen2DecoderLayer)",
            config='{"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}')
    refused("names no decoder layer class", layout=ModelLayout("OddForCausalLM", (), frozenset({"OddBlock"})))
    assert plan(layout=ModelLayout("OddForCausalLM", (), frozenset({"OddBlock"})),
                config='{"transformer_layer_cls_to_wrap": "OddBlock"}').describe() == "FSDP full shard (auto-wrap OddBlock)"
    refused("min_num_params is read only with auto_wrap_policy SIZE_BASED_WRAP", config='{"min_num_params": 1000}')
    refused("SIZE_BASED_WRAP needs a positive count", config='{"auto_wrap_policy": "SIZE_BASED_WRAP"}')
    refused("transformer_layer_cls_to_wrap is read only with TRANSFORMER_BASED_WRAP",
            config='{"auto_wrap_policy": "SIZE_BASED_WRAP", "min_num_params": 1000, '
                   '"transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"]}')
    sized = plan(config='{"auto_wrap_policy": "SIZE_BASED_WRAP", "min_num_params": 100000}')
    assert sized.describe() == "FSDP full shard (auto-wrap modules of 100,000+ parameters)"
    assert "transformer_layer_cls_to_wrap" not in sized.config
    assert plan("full_shard", '{"auto_wrap_policy": "NO_WRAP"}').describe() == \
        "FSDP full shard (no auto-wrap: the whole model is one unit)"


# ---------------------------------------------------------------- activation checkpointing
def test_gradient_checkpointing_is_the_models_own_unless_the_config_chooses_fsdps():
    p = plan(gc=True, gc_source="flag")
    assert p.gradient_checkpointing and p.model_checkpointing and p.config["activation_checkpointing"] is False
    fsdp_ac = plan(config='{"activation_checkpointing": true}')  # the flag left at its default: the config decides
    assert fsdp_ac.gradient_checkpointing and not fsdp_ac.model_checkpointing
    assert fsdp_ac.sources == {"gradient_checkpointing": "fsdp_config"}
    assert fsdp_ac.describe().endswith(", FSDP activation checkpointing)")
    both = plan(config='{"activation_checkpointing": true}', gc=True, gc_source="yaml")
    assert not both.model_checkpointing and both.sources == {}  # they agree: FSDP's, once (transformers refuses both)


def test_checkpointing_flag_against_the_config_and_fsdp_checkpointing_with_dropout(tmp_path):
    path = write(tmp_path, {"activation_checkpointing": False})
    refused(f"--fsdp_config {path}", "activation_checkpointing = false but --gradient_checkpointing true (flag)",
            config=path, gc=True, gc_source="flag")
    refused("activation_checkpointing = true but --gradient_checkpointing false (flag)",
            config='{"activation_checkpointing": true}', gc=False, gc_source="flag")
    lora = dataclasses.replace(QWEN2, dropouts=(("lora_dropout", 0.05),))
    refused("dropout active (lora_dropout 0.05)", "does not preserve the RNG state", "--gradient_checkpointing true",
            config='{"activation_checkpointing": true}', layout=lora)
    assert plan(layout=lora, gc=True, gc_source="flag").model_checkpointing  # the model's own keeps the masks


# ---------------------------------------------------------------- ms-swift FSDP files and bad JSON
def test_an_ms_swift_fsdp_file(tmp_path):
    ours = write(tmp_path, {"_description": "a comment", "fsdp": "shard_grad_op auto_wrap",
                            "fsdp_config": {"fsdp_version": 2, "reshard_after_forward": False}}, "swift.json")
    p = plan(ours)
    assert p.config["reshard_after_forward"] is False and p.label == f"--fsdp {ours}"
    # ms-swift's own preset file (swift/config/fsdp2.json): its sharded checkpoints and CPU-RAM loading are refused
    swift = write(tmp_path, {"fsdp": "full_shard auto_wrap", "fsdp_config": {
        "fsdp_version": 2, "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "cpu_ram_efficient_loading": True, "state_dict_type": "SHARDED_STATE_DICT", "activation_checkpointing": True}},
        "fsdp2.json")
    refused(f"--fsdp {swift}", "FULL_STATE_DICT", "cpu_ram_efficient_loading", fsdp=swift)
    refused("gives another; give one", fsdp=ours, config='{"cpu_offload": false}')
    refused("unknown keys distributed_type", fsdp=write(tmp_path, {"distributed_type": "FSDP", "fsdp_config": {}}))


def test_bad_json_and_missing_files(tmp_path):
    refused("--fsdp_config (inline JSON): invalid JSON at line 1", config='{"cpu_offload": tru}')
    refused("expected a JSON object, got list", config=write(tmp_path, [1]))
    refused("no such file", config=str(tmp_path / "missing.json"))
    refused("--fsdp missing.json: no such file", fsdp="missing.json")


# ---------------------------------------------------------------- what transformers makes of the config
def test_transformers_builds_the_fsdp_plugin_tunewise_planned(tmp_path):
    """The config goes to TrainingArguments(fsdp=True, fsdp_config=...) unchanged: transformers 5.23 reads every key
    (its plugin arguments say FSDP2, the decoder layer, full checkpoints, offload)."""
    from transformers import TrainingArguments

    p = plan("full_shard auto_wrap offload", cuda=True)
    targs = TrainingArguments(output_dir=str(tmp_path), fsdp=True, fsdp_config=dict(p.config), use_cpu=True,
                              report_to=[])
    assert targs.fsdp_plugin_args == {
        "fsdp_version": 2, "cpu_offload": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_cls_names_to_wrap": "Qwen2DecoderLayer", "cpu_ram_efficient_loading": False,
        "state_dict_type": "FULL_STATE_DICT", "activation_checkpointing": False, "reshard_after_forward": True}
