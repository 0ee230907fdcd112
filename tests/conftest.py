import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

import pytest

# The recipe. Runs are repeatable since LoRA's initialisation is seeded; with 10 epochs the held-out
# Chinese identity still depends a little on that draw (seed 42: 8 of 8, seeds 1 and 2: 7 of 8; English 8 of 8 for
# all three; additions 0.92 -> 0.88 / 0.875 / 0.89). The tests pin seed 2, measured, so CI checks one known run.
IDENTITY_FLAGS = ["--dataset", "self_cognition", "--model_name", "小黄", "Xiao Huang",
                  "--model_author", "魔搭", "ModelScope", "--num_train_epochs", "10", "--seed", "2"]


def run_cli(*argv) -> int:
    from tunewise.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="session")
def identity_run(tmp_path_factory):
    """The issue's recipe: LoRA on self_cognition, 10 epochs, every other flag at its default."""
    out = tmp_path_factory.mktemp("identity")
    assert run_cli("sft", *IDENTITY_FLAGS, "--output_dir", out, "--add_version", "false") == 0
    return out


@pytest.fixture(scope="session")
def base_model():
    from tunewise.models.load import load_model, load_tokenizer, resolve_model

    path = resolve_model("tunewise-tiny")
    return load_model(path).eval(), load_tokenizer(path)
