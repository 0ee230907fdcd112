"""The memory advice of an out-of-memory error (tunewise.train.oom.remedies): a smaller per-device batch, except where
the run cannot use one. KTO's KL term needs 2 rows a device batch (a batch of 1 runs as 2 again, tunewise.args.kto),
so at 2 the advice is the loss without that term."""
import pytest

from tunewise.args import KtoArgs, SftArgs
from tunewise.train.oom import remedies


def test_sft_is_told_a_smaller_batch_with_more_accumulation():
    advice = remedies(SftArgs(dataset=["x.jsonl"], per_device_train_batch_size=1, gradient_accumulation_steps=4))
    assert "a smaller --per_device_train_batch_size (now 1; raise --gradient_accumulation_steps, now 4," in advice


def test_kto_at_its_smallest_batch_is_told_the_loss_without_the_kl_term_at_a_batch_of_one(tmp_path):
    """A run's args are the regrouped ones: typed 1 x 8 (or 2 x 4) it runs as 2 x 4; the advice keeps its 8 rows."""
    from tunewise.recipes.kto import regroup

    typed = KtoArgs(dataset=["kto.jsonl"], per_device_train_batch_size=1, gradient_accumulation_steps=8)
    changes, _ = regroup(typed, {}, 1)
    runs = KtoArgs(dataset=["kto.jsonl"], **{name: value for name, (value, _) in changes.items()})
    assert (runs.per_device_train_batch_size, runs.gradient_accumulation_steps) == (2, 4)
    advice = remedies(runs)
    assert "smaller --per_device_train_batch_size" not in advice
    assert "--loss_type apo_zero_unpaired --per_device_train_batch_size 1 --gradient_accumulation_steps 8 (no KL " \
           "term, so a per-device batch of 1 runs as given, the global batch kept; now --loss_type kto, whose KL " \
           "term needs 2 rows a device batch: a batch of 1 runs as 2)" in advice


def test_kto_above_two_rows_is_told_a_smaller_batch_of_two_or_more():
    advice = remedies(KtoArgs(dataset=["kto.jsonl"], per_device_train_batch_size=4))
    assert "a smaller --per_device_train_batch_size of 2 or more (KTO's KL term pairs the rows of a device batch; " \
           "now 4;" in advice


def test_kto_without_the_kl_term_is_told_any_smaller_batch():
    advice = remedies(KtoArgs(dataset=["kto.jsonl"], loss_type="apo_zero_unpaired", per_device_train_batch_size=2))
    assert "a smaller --per_device_train_batch_size (now 2;" in advice and "apo_zero_unpaired, which" not in advice
