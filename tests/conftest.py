import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

import pytest

from cli_runs import IDENTITY_FLAGS, run_cli


@pytest.fixture(scope="session")
def identity_run(tmp_path_factory):
    """The identity recipe: LoRA, every other flag at its default (the model's recommended values)."""
    out = tmp_path_factory.mktemp("identity")
    assert run_cli("sft", *IDENTITY_FLAGS, "--output_dir", out, "--add_version", "false") == 0
    return out


@pytest.fixture(scope="session")
def base_model():
    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    path = resolve_model("tunewise-tiny")
    return load_model(path).eval(), load_tokenizer(path)


@pytest.fixture(scope="session")
def one_process_run(tmp_path_factory):
    """parallel_runs.one_process: the reference of the data-parallel equality tests."""
    from parallel_runs import one_process

    return one_process(tmp_path_factory.mktemp("parallel") / "one")


@pytest.fixture
def restore_reward_registry():
    """Runs that load plugin files register their rewards in this process: taken away again after the test."""
    from tunewise.rewards import plugins

    saved = dict(plugins.REGISTRY)
    yield
    plugins.REGISTRY.clear()
    plugins.REGISTRY.update(saved)
