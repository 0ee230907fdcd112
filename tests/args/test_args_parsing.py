"""Reading flags and YAML into the command classes: sources, multi-value flags and aliases, booleans, unknown flags
and keys, values of the wrong type."""
import pytest

from tunewise.args import ExportArgs, InferArgs, SftArgs
from tunewise.flags import parse
from tunewise.errors import UserError


def test_flags_override_yaml_and_sources_are_recorded(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("learning_rate: 3.0e-4\nnum_train_epochs: 5\ndataset: [a.jsonl, b.jsonl]\n")
    args, sources, _ = parse(SftArgs, ["--config", str(cfg), "--num_train_epochs", "7", "--lora_rank", "16"])
    assert args.learning_rate == 3e-4 and sources["learning_rate"] == "yaml"
    assert args.num_train_epochs == 7.0 and sources["num_train_epochs"] == "flag"
    assert args.lora_rank == 16 and sources["lora_rank"] == "flag"
    assert args.dataset == ["a.jsonl", "b.jsonl"]
    assert sources["lora_alpha"] == "default"


def test_multi_value_flags_and_aliases():
    args, sources, _ = parse(SftArgs, ["--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭", "ModelScope",
                                       "--tuner_type", "full", "--dataset", "a.jsonl,self_cognition#20", "b.json"])
    assert args.model_name == ["小黄", "Xiao Huang"]
    assert args.model_author == ["魔搭", "ModelScope"]
    assert args.train_type == "full" and sources["train_type"] == "flag"
    assert args.dataset == ["a.jsonl", "self_cognition#20", "b.json"]


def test_booleans_and_equals_form():
    args, _, _ = parse(InferArgs, ["--stream", "false", "--temperature=0.7", "--adapters", "ckpt"])
    assert args.stream is False and args.temperature == 0.7 and args.adapters == ["ckpt"]
    args, _, _ = parse(ExportArgs, ["--merge_lora"])
    assert args.merge_lora is True


def test_unknown_flags_are_reported_together_with_close_matches():
    with pytest.raises(UserError) as e:
        parse(SftArgs, ["--lerning_rate", "1e-4", "--num_train_epoch", "3"])
    msg = str(e.value)
    assert "--lerning_rate" in msg and "--learning_rate" in msg
    assert "--num_train_epochs" in msg
    assert "Unexpected value" not in msg


def test_bad_values_name_the_flag():
    with pytest.raises(UserError, match="--lora_rank: expected an integer"):
        parse(SftArgs, ["--lora_rank", "abc"])
    with pytest.raises(UserError, match="--train_type qlora"):
        parse(SftArgs, ["--train_type", "qlora"])
    with pytest.raises(UserError, match="both set"):
        parse(SftArgs, ["--warmup_ratio", "0.1", "--warmup_steps", "3"])


def test_yaml_errors_name_file_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("learning_rate: 1e-4\nnum_train_epochs: [3\n")
    with pytest.raises(UserError, match=r"bad\.yaml:\d+"):
        parse(SftArgs, ["--config", str(cfg)])
    cfg.write_text("lerning_rate: 1e-4\n")
    with pytest.raises(UserError, match="unknown key 'lerning_rate'.*learning_rate"):
        parse(SftArgs, ["--config", str(cfg)])


def test_ms_swift_launch_variables_are_read_and_named_as_the_source(monkeypatch, tmp_path):
    """NPROC_PER_NODE=2 swift sft ... is how ms-swift's examples start data parallel; read silently as 1 before."""
    monkeypatch.setenv("NPROC_PER_NODE", "2")
    monkeypatch.setenv("MASTER_PORT", "29123")
    args, sources, _ = parse(SftArgs, [])
    assert (args.nproc_per_node, sources["nproc_per_node"]) == (2, "env NPROC_PER_NODE")
    assert (args.master_port, sources["master_port"]) == (29123, "env MASTER_PORT")
    args, sources, _ = parse(SftArgs, ["--nproc_per_node", "2"])  # the same value twice is fine
    assert sources["nproc_per_node"] == "flag"
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("nproc_per_node: 4\n")
    for argv, said in ((["--nproc_per_node", "1"], "--nproc_per_node 1"), (["--config", str(yaml_file)],
                                                                             f"{yaml_file}: nproc_per_node: 4")):
        with pytest.raises(UserError) as e:
            parse(SftArgs, argv)
        assert str(e.value) == (f"{said} and the environment's NPROC_PER_NODE=2 disagree: give one of them "
                                "(unset NPROC_PER_NODE, or drop --nproc_per_node).")
    monkeypatch.setenv("NPROC_PER_NODE", "two")
    with pytest.raises(UserError) as e:
        parse(SftArgs, [])
    assert str(e.value) == ("NPROC_PER_NODE (the environment variable read as --nproc_per_node): expected an "
                            "integer, got 'two'.")
