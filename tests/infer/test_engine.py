import io

import pytest
import torch

from cli_runs import run_cli
from tunewise.args import Sampling
from tunewise.infer.chat import answer
from tunewise.infer.engine import Engine
from tunewise.models.generate import Reply

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tuned(identity_run):
    return Engine.load(adapters=[str((identity_run / "last").resolve())])


def test_adapter_loads_with_plain_peft_and_answers_the_same(identity_run, tuned):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = (identity_run / "last").resolve()
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tuned.checkpoint.base), ckpt).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": "你是谁？"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=40, do_sample=False, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    plain = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert plain == tuned.chat([{"role": "user", "content": "你是谁？"}], Sampling(max_new_tokens=40)).text


def test_merged_export_has_equal_logits(identity_run, tuned, tmp_path):
    from transformers import AutoModelForCausalLM

    ckpt = (identity_run / "last").resolve()
    out = tmp_path / "merged"
    assert run_cli("export", "--adapters", ckpt, "--merge_lora", "true", "--output_dir", out) == 0
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([tuned.prompt_ids([{"role": "user", "content": "Who are you? 你是谁？ 12+34=?"}])])
    with torch.no_grad():
        a = tuned.model(input_ids=ids).logits
        b = merged(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    again = Engine.load(model=str(out))
    q = [{"role": "user", "content": "Who are you?"}]
    assert again.chat(q).text == tuned.chat(q).text


def test_stream_pieces_add_up_to_the_reply(tuned):
    q = [{"role": "user", "content": "Who are you?"}]
    pieces = list(tuned.stream(q, Sampling(max_new_tokens=40)))
    final = pieces[-1]
    assert isinstance(final, Reply) and final.finish_reason == "stop"
    assert "".join(pieces[:-1]).strip() == final.text.strip() == tuned.chat(q, Sampling(max_new_tokens=40)).text.strip()


def test_reply_cut_by_max_new_tokens_is_reported(tuned, capsys):
    out = io.StringIO()
    reply = answer(tuned, [{"role": "user", "content": "Please introduce yourself."}], Sampling(max_new_tokens=3),
                   stream=False, out=out)
    assert reply.finish_reason == "length" and reply.completion_tokens == 3
    assert "max_new_tokens 3" in capsys.readouterr().err


def test_cli_query_uses_the_run_args(identity_run, capsys):
    assert run_cli("infer", "--adapters", (identity_run / "last").resolve(), "--query", "Who are you?") == 0
    assert "Xiao Huang" in capsys.readouterr().out


def test_sampling_with_seed_is_reproducible(tuned):
    q = [{"role": "user", "content": "hello"}]
    s = Sampling(temperature=0.9, top_p=0.9, max_new_tokens=20, seed=3)
    assert tuned.chat(q, s).text == tuned.chat(q, s).text


def test_interactive_chat_keeps_history_until_clear(identity_run):
    import subprocess
    import sys

    ckpt = (identity_run / "last").resolve()
    proc = subprocess.run([sys.executable, "-m", "tunewise.cli", "infer", "--adapters", str(ckpt), "--max_new_tokens", "40"],
                          input="Who are you?\nclear\n你是谁？\nexit\n", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Xiao Huang" in proc.stdout and "小黄" in proc.stdout
    assert "(new conversation)" in proc.stdout
