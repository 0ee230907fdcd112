"""One `tunewise serve` process for every test in tests/serve (it takes seconds to start on 2 cores)."""
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import httpx
import openai
import pytest

from harness import KEY, MAX_TOKENS, PROMPTS, free_port, hf_reference, make_adapter


@pytest.fixture(scope="package")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="package")
def served(adapter, tmp_path_factory, request):
    """`tunewise serve --model tunewise-tiny --adapters xh=CKPT --api-key KEY` in its own process, default host
    and limits: its url, process and log file."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    code = "import sys; from tunewise.cli import main; sys.exit(main(['serve', *sys.argv[1:]]))"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, "--model", "tunewise-tiny", "--adapters", f"xh={adapter}",
                                 "--port", str(port), "--api-key", KEY, "--log_level", "warning", "--num_threads", "1"],
                                stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    url = f"http://127.0.0.1:{port}"
    request.getfixturevalue("references")  # computed while the server starts
    request.getfixturevalue("hf")
    deadline = time.time() + 120
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, log.read_text()
        time.sleep(0.3)
    yield SimpleNamespace(url=url, proc=proc, log=log)
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="package")
def server(served):
    return served.url


@pytest.fixture(scope="package")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="package")
def references(adapter):
    """Greedy answers of the plain (unbatched) engine: base and adapter."""
    from tunewise.args import Sampling
    from tunewise.infer.engine import Engine

    base = Engine.load("tunewise-tiny")
    tuned = Engine.load(adapters=[str(adapter)])
    s = Sampling(max_new_tokens=MAX_TOKENS)
    return {("tunewise-tiny", p): base.chat([{"role": "user", "content": p}], s) for p in PROMPTS} | \
           {("xh", p): tuned.chat([{"role": "user", "content": p}], s) for p in PROMPTS}


@pytest.fixture(scope="package")
def hf():
    """transformers' own model and tokenizer (harness.hf_reference), for the logprob and raw-text checks."""
    return hf_reference()
