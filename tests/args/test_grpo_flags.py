"""GRPO's vLLM flags: ms-swift's names with TRL's defaults, their checks, and GRPOConfig receiving them."""
import importlib.util

import pytest

from cli_runs import run_cli
from tunewise.args import GrpoArgs
from tunewise.errors import UserError
from tunewise.flags import parse

VLLM = importlib.util.find_spec("vllm") is not None
BASE = {"dataset": ["additions"], "reward_funcs": ["accuracy"]}


def test_the_flags_and_their_defaults():
    args = GrpoArgs(**BASE)
    assert (args.use_vllm, args.vllm_mode, args.vllm_gpu_memory_utilization, args.vllm_server_host,
            args.vllm_server_port) == (False, "colocate", 0.3, "0.0.0.0", 8000)  # GRPOConfig's own defaults
    args, sources, _ = parse(GrpoArgs, ["--dataset", "additions", "--reward_funcs", "accuracy", "--vllm_mode", "server",
                                        "--vllm_gpu_memory_utilization", "0.45", "--vllm_server_host", "10.0.0.2",
                                        "--vllm_server_port", "8123"])
    assert (args.vllm_mode, args.vllm_gpu_memory_utilization, args.vllm_server_host, args.vllm_server_port) == (
        "server", 0.45, "10.0.0.2", 8123)
    assert sources["vllm_server_port"] == "flag" and sources["use_vllm"] == "default"


@pytest.mark.parametrize("values, message", [
    ({"vllm_mode": "remote"}, "--vllm_mode remote: expected one of colocate, server."),
    ({"vllm_gpu_memory_utilization": 0.0}, "--vllm_gpu_memory_utilization 0: a share of the GPU's memory, above 0 "
                                           "and at most 1."),
    ({"vllm_gpu_memory_utilization": 1.5}, "--vllm_gpu_memory_utilization 1.5: a share of the GPU's memory, above 0 "
                                           "and at most 1."),
    ({"vllm_server_port": 70000}, "--vllm_server_port 70000: a TCP port, 1 to 65535."),
])
def test_vllm_problems(values, message):
    with pytest.raises(UserError) as e:
        GrpoArgs(**BASE, **values)
    assert str(e.value) == message


@pytest.mark.skipif(VLLM, reason="vllm is importable here: --use_vllm true is allowed")
def test_use_vllm_without_vllm_stops_before_anything_is_written(tmp_path, capsys):
    assert "the vllm package is not importable here" in GrpoArgs(**BASE, use_vllm=True).vllm_missing()
    out = tmp_path / "run"
    assert run_cli("rlhf", "--rlhf_type", "grpo", "--dataset", "additions#16", "--reward_funcs", "accuracy",
                   "--use_vllm", "true", "--output_dir", out) == 2
    assert "the vllm package is not importable" in capsys.readouterr().err
    assert not out.exists()
    # a plan made here for a GPU machine that has vLLM: noted, not refused
    assert run_cli("plan", "--rlhf_type", "grpo", "--dataset", "additions#16", "--reward_funcs", "accuracy",
                   "--use_vllm", "true", "--gpu_memory", "80GiB", "--output_dir", tmp_path / "plan") == 0
    assert "A run here stops on it; this plan is for a machine that has it." in capsys.readouterr().out


def test_grpo_config_receives_them(tmp_path):
    from trl import GRPOConfig

    from tunewise.recipes.grpo import config_fields

    args = GrpoArgs(**BASE, vllm_mode="server", vllm_gpu_memory_utilization=0.5, vllm_server_host="10.0.0.2",
                    vllm_server_port=8123)
    config = GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **config_fields(args))
    assert (config.use_vllm, config.vllm_mode, config.vllm_gpu_memory_utilization, config.vllm_server_host,
            config.vllm_server_port) == (False, "server", 0.5, "10.0.0.2", 8123)
