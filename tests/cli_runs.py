"""Running the CLI the way the tests do: `run_cli` (in-process, the exit code), the identity recipe's flags, and a
run's logging.jsonl read strictly. Imported as `from cli_runs import ...` (a module named conftest would be shadowed
by tests/serve/conftest.py)."""

IDENTITY = ["--model_name", "小黄", "Xiao Huang", "--model_author", "魔搭", "ModelScope"]
# The demo's identity recipe (README "The embedded model", tunewise.json "identity"): every identity row twice per
# epoch, 400 additions mixed in, 5 epochs in padding-free batches of 4 rows, 750 steps; the retention watch on.
# Seeded runs repeat exactly on one CPU kind and differ between kinds (ATEN_CPU_CAPABILITY avx512 / avx2 / default);
# the bounds in the tests that read this run are set from the spread measured over seeds 42, 1, 2 and those three
# kinds, and say so where they stand.
IDENTITY_FLAGS = ["--dataset", "self_cognition#200", "tiny_skills#400", *IDENTITY, "--num_train_epochs", "5",
                  "--per_device_train_batch_size", "4", "--retention_eval_steps", "250", "--seed", "42"]
# Identity data alone, 10 epochs (1,000 steps): where only the loading path is tested, not what the model kept.
IDENTITY_ONLY_FLAGS = ["--dataset", "self_cognition", *IDENTITY, "--num_train_epochs", "10"]


def read_log(run) -> list[dict]:
    """A run's logging.jsonl, strictly: a line that is not JSON fails the test."""
    import json

    return [json.loads(line) for line in (run / "logging.jsonl").read_text().splitlines()]


def run_cli(*argv) -> int:
    from tunewise.cli import main

    return main([str(a) for a in argv])
