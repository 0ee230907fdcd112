"""GRPO with a vLLM server on CPU: TRL 1.16 syncs the trained weights to the server over NCCL only, so
`--use_vllm true --vllm_mode server` without CUDA stops before anything is written, and the facts its message states
are held against the installed TRL."""
import importlib.util
import inspect
import json

import pytest
import torch

from cli_runs import run_cli
from tunewise.args import GrpoArgs

VLLM = importlib.util.find_spec("vllm") is not None
SERVER = ["--rlhf_type", "grpo", "--dataset", "additions#16", "--reward_funcs", "accuracy", "--use_vllm", "true",
          "--vllm_mode", "server", "--vllm_server_host", "127.0.0.1"]
NCCL = "pushes the trained weights to the vLLM server after every step over NCCL"

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine: TRL's server mode can sync there")


@NO_CUDA
def test_server_mode_without_cuda_stops_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("rlhf", *SERVER, "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert NCCL in err and "no CUDA GPU" in err
    assert "On CPU leave --use_vllm out: transformers' generate runs the completions (the default" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_without_use_vllm_the_same_flags_pass_the_check():
    assert GrpoArgs(dataset=["additions"], reward_funcs=["accuracy"], vllm_mode="server").vllm_missing() is None


@pytest.mark.skipif(VLLM, reason="vllm is importable here")
def test_colocate_keeps_its_own_reason():
    message = GrpoArgs(dataset=["additions"], reward_funcs=["accuracy"], use_vllm=True).vllm_missing()
    assert "the vllm package is not importable here" in message and "NCCL" not in message


@NO_CUDA
def test_a_plan_for_a_gpu_machine_notes_it(tmp_path, capsys):
    assert run_cli("plan", *SERVER, "--gpu_memory", "80GiB", "--output_dir", tmp_path / "plan") == 0
    notes = json.loads((tmp_path / "plan" / "plan.json").read_text())["extra"]["notes"]
    assert any(NCCL in note and "A run here stops on it" in note for note in notes)


def test_trls_server_weight_sync_is_nccl_only():
    """What the message says of TRL 1.16: `trl vllm-serve` starts vLLM with the NCCL weight-transfer engine, the
    client refuses a device that is not CUDA, and without vllm the client cannot be made in the trainer at all."""
    from trl.generation.vllm_client import VLLMClient
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    command = build_command(ScriptArguments(model="tunewise-tiny"))
    assert command[command.index("--weight-transfer-config") + 1] == '{"backend": "nccl"}'
    source = inspect.getsource(VLLMClient.init_communicator)
    assert 'if device.type != "cuda":' in source and "raise NotImplementedError" in source
    if not VLLM:
        with pytest.raises(ImportError, match="vLLM is not installed"):
            VLLMClient(host="127.0.0.1", server_port=1)
