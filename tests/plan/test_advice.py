"""Hyper-parameter advice: by data size, method, the model's own values and identity rows; the advice a planned run
prints."""
from tunewise.plan.advice import advise, format_advice

def test_advice_by_data_size_and_warnings():
    small = advise(80, "lora")
    assert small.values()["learning_rate"] == 1e-4 and 8 <= small.values()["num_train_epochs"] <= 12
    assert small.values()["lora_alpha"] == 4 * small.values()["lora_rank"]
    assert 0.05 <= small.values()["warmup_ratio"] <= 0.1
    mid = advise(300, "lora").recommendations["num_train_epochs"]
    assert 3 <= mid.value <= 5 and "early stopping" in mid.reason
    big = advise(5000, "full").values()
    assert 2 <= big["num_train_epochs"] <= 3 and 1e-5 <= big["learning_rate"] <= 2e-5
    warned = advise(80, "lora", chosen={"learning_rate": 1e-3, "num_train_epochs": 20, "warmup_ratio": 0.05})
    text = " ".join(warned.warnings)
    assert "10x the advised" in text and "likely to parrot training answers" in text
    assert not advise(80, "lora", chosen={"learning_rate": 2e-4, "num_train_epochs": 10}).warnings
    # a built-in model's own recommended values win for it
    own = advise(100, "lora", recommended={"learning_rate": 1e-3, "lora_rank": 8, "lora_alpha": 32, "warmup_ratio": 0.05},
                 chosen={"learning_rate": 1e-3})
    assert own.values()["learning_rate"] == 1e-3 and "tunewise.json" in own.recommendations["learning_rate"].reason
    assert not own.warnings
    assert "WARNING" in format_advice(warned)


def test_plan_advice_for_a_prepared_run(tmp_path):
    from tunewise.plan.advice import plan_advice
    from tunewise.args import SftArgs
    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes.sft import RECIPE as SFT

    args, sources, _ = parse(SftArgs, ["--dataset", "self_cognition#80", "--model_name", "N", "--model_author", "A",
                                       "--num_train_epochs", "30", "--gpu_memory", "24GiB", "--output_dir", str(tmp_path)])
    text = plan_advice(resolve(SFT, args, sources))
    assert "learning_rate" in text and "the model's own recommended value" in text  # the built-in model's values
    assert "likely to parrot training answers" in text  # 30 epochs on 80 samples
    assert "memory estimate:" in text and "fits in 24.00 GiB" in text


def test_identity_data_gets_the_identity_epoch_rule_whatever_is_mixed_in():
    # 100 identity rows + 200 general rows: the 8-12 epoch rule of the identity rows, not the 3-5 of 300 samples
    mixed = advise(300, "lora", identity_rows=100, chosen={"num_train_epochs": 10})
    epochs = mixed.recommendations["num_train_epochs"]
    assert 8 <= epochs.value <= 12 and "100 identity rows" in epochs.reason and "200 general rows" in epochs.reason
    assert not mixed.warnings
    # the model's measured identity recipe wins, and identity data alone is told to mix general data in
    recipe = {"num_train_epochs": 10, "mix": "tiny_skills#200"}
    alone = advise(100, "lora", identity_rows=100, identity_recipe=recipe, chosen={"num_train_epochs": 10})
    assert "measured identity recipe" in alone.recommendations["num_train_epochs"].reason
    assert any("identity data alone" in w and "tiny_skills#200" in w for w in alone.warnings)
    parrot = advise(300, "lora", identity_rows=100, chosen={"num_train_epochs": 20})
    assert any("20 on 100 identity rows: likely to parrot" in w for w in parrot.warnings)
    # without identity rows nothing changes: 300 samples, 3-5 epochs
    assert 3 <= advise(300, "lora").values()["num_train_epochs"] <= 5


def test_the_demo_recipe_gets_advice_that_agrees_with_it(tmp_path):
    from tunewise.plan.advice import plan_advice
    from tunewise.args import SftArgs
    from tunewise.flags import parse
    from tunewise.plan.resolve import resolve
    from tunewise.recipes.sft import RECIPE as SFT

    args, sources, _ = parse(SftArgs, ["--dataset", "self_cognition#200", "tiny_skills#400", "--model_name", "N",
                                       "--model_author", "A", "--num_train_epochs", "5", "--output_dir", str(tmp_path)])
    text = plan_advice(resolve(SFT, args, sources))
    assert "num_train_epochs  5        (planned 5)" in text and "200 identity rows" in text
    assert "measured identity recipe (tunewise.json: --dataset self_cognition#200 tiny_skills#400" in text
    assert "WARNING" not in text
    # identity data alone is told what to mix in
    args, sources, _ = parse(SftArgs, ["--dataset", "self_cognition", "--model_name", "N", "--model_author", "A",
                                       "--num_train_epochs", "10", "--output_dir", str(tmp_path)])
    assert "identity data alone" in plan_advice(resolve(SFT, args, sources))
