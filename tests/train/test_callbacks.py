from types import SimpleNamespace

from transformers import TrainerControl

from tunewise.models.checkpoint import checkpoints
from tunewise.train import rundir
from tunewise.train.callbacks import BestTracker


def evaluate(tracker, step, loss):
    control = TrainerControl()
    tracker.on_evaluate(None, SimpleNamespace(global_step=step), control, metrics={"eval_loss": loss})
    return control.should_training_stop


def test_early_stop_after_patience_evaluations_without_improvement():
    tracker = BestTracker(patience=2)
    assert not evaluate(tracker, 10, 1.0)
    assert not evaluate(tracker, 20, 0.8)
    assert not evaluate(tracker, 30, 0.9)
    assert evaluate(tracker, 40, 0.85)
    assert tracker.best_step == 20 and tracker.stopped_early


def test_without_patience_it_only_tracks_the_best():
    tracker = BestTracker()
    for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 2.5), (5, 2.6)]:
        assert not evaluate(tracker, step, loss)
    assert tracker.best_step == 2


def test_rotation_keeps_best_and_last(tmp_path):
    for step in (10, 20, 30, 40):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")  # complete
    rundir.rotate(tmp_path, 2, tmp_path / "checkpoint-10")
    assert sorted(p.name for p in checkpoints(tmp_path)) == ["checkpoint-10", "checkpoint-40"]
    assert (tmp_path / "best").resolve().name == "checkpoint-10"
    assert (tmp_path / "last").resolve().name == "checkpoint-40"


def test_publish_is_a_rename_of_a_complete_folder(tmp_path):
    staged = tmp_path / rundir.STAGING / "checkpoint-5"
    staged.mkdir(parents=True)
    (staged / "weights").write_text("w")
    final = rundir.publish(staged, tmp_path)
    assert final == tmp_path / "checkpoint-5" and (final / "weights").read_text() == "w"
    assert not staged.exists()
