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


LAUNCH_VARIABLES = ("NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_AT_START = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}


@pytest.fixture(autouse=True)
def launch_variables_restored():
    """tunewise reads ms-swift's launch variables (NPROC_PER_NODE, MASTER_PORT, ...) as flags, and an in-process
    one-process DeepSpeed run sets MASTER_ADDR/MASTER_PORT for its gloo group (train/build.py): without this, a later
    test's subprocess would inherit them and see its --master_port contradicted. Restored to the session's start
    (a module-scoped fixture may have set them before a test's own snapshot could)."""
    yield
    for name, value in LAUNCH_AT_START.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
