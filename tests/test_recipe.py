"""`fine_tune` as a recipe (issue 18): the stage plan, a head stage that converges, the automatic
rate, robustness to a bad fine-tuning rate; and user callbacks across stages (issue 19)."""

import csv
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk.stages import HEAD_PATIENCE, Stage, plan_stages
from tltk.training import MIN_AUTO_RATE, fine_tune

from tests.test_training import FAST, build, datasets


@pytest.fixture(scope="module")
def data():
    return datasets()


@pytest.fixture(scope="module")
def converged():
    """A head-only run with the automatic rate, seed 7 (fresh datasets: each read of a shuffled
    dataset is another order, and the order is part of what a seed fixes)."""
    keras.utils.set_random_seed(7)
    model = build()
    return model, fine_tune(model, *datasets(), epochs=0, verbose=0)


def test_the_head_stage_on_cached_features_stops_once_validation_loss_stops_improving(converged):
    model, result = converged
    (history,) = result.histories
    assert result.stages[0]["cached"] and result.stages[0]["converge"]
    losses = history["val_loss"]
    best_loss = int(np.argmin(losses))  # the first of the lowest
    # It ran until `HEAD_PATIENCE` epochs in a row had no lower validation loss, well below 200.
    assert len(losses) == best_loss + 1 + HEAD_PATIENCE < result.stages[0]["epochs"] == 200
    assert all(value >= losses[best_loss] for value in losses[best_loss + 1 :])
    # It keeps its best epoch (by the monitor, ties to the lower loss) or, unless that epoch is
    # better on both, the linear probe fitted after it; and the model has it.
    key = [(a, -v) for a, v in zip(history["val_accuracy"], losses)]
    best, probe = max(key), result.probe
    dominated = best[0] >= probe["val_accuracy"] and -best[1] < probe["val_loss"]
    assert probe["kept"] != dominated and result.best_stage == 1
    if probe["kept"]:
        assert result.best_epoch is None and result.best_metric == probe["val_accuracy"]
    else:
        assert result.best_epoch == key.index(best) and result.best_metric == best[0]
    accuracy = model.evaluate(datasets()[1], verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(result.best_metric) and result.best_metric >= 0.8


def test_the_automatic_rate_is_deterministic_and_inside_the_scanned_range(converged, capsys):
    _, first = converged
    keras.utils.set_random_seed(7)
    again = fine_tune(build(), *datasets(), head_epochs=1, epochs=1, verbose=1)
    finder = again.lr_finder
    assert again.learning_rate == first.learning_rate == max(finder.suggestion, MIN_AUTO_RATE)
    assert finder.learning_rates[0] <= again.learning_rate <= finder.learning_rates[-1]
    assert again.fine_tune_lr == pytest.approx(again.learning_rate / 2)
    assert again.stages[1]["learning_rates"]["head"] == pytest.approx(again.fine_tune_lr)
    printed = capsys.readouterr().out
    assert f"range test: head {again.learning_rate:.2g}, fine-tuning" in printed


def test_a_harmful_fine_tuning_rate_still_ends_at_the_converged_head(converged, data):
    keras.utils.set_random_seed(7)
    model = build()
    result = fine_tune(model, *datasets(), epochs=2, fine_tune_lr=10.0, verbose=0)
    assert max(result.histories[1]["val_accuracy"]) < result.stage1_metric
    assert result.restored_stage1 and result.best_stage == 1
    # The same head stage as the head-only run: its converged accuracy, in the model too.
    assert result.histories[0] == converged[1].histories[0]
    assert result.best_metric == result.stage1_metric == converged[1].best_metric
    accuracy = model.evaluate(data[1], verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(result.stage1_metric)


def test_the_plan_can_be_read_and_passed_back():
    model = build()
    plan = plan_stages(model, epochs=6, unfreeze=[1, "all"], learning_rate=1e-2)
    assert plan == [
        Stage((), 200, 1e-2, cached=True, converge=True, patience=HEAD_PATIENCE, probe=True),
        Stage(("top",), 3, 5e-3, patience=5),
        Stage(("stem", "block1", "block2", "top"), 3, 5e-3, patience=5),
    ]
    assert plan_stages(model, head_epochs=3, epochs=0, cache_features=False) == [
        Stage((), 3, "auto", patience=5)
    ]
    train, val = datasets(n_train=32)
    mine = [Stage((), 2, 3e-2, cached=True), Stage(("top",), 1, "auto")]
    result = fine_tune(model, train, val, stages=mine, verbose=0)
    assert [len(h["loss"]) for h in result.histories] == [2, 1]
    assert result.stages[1]["learning_rate"] == result.fine_tune_lr == pytest.approx(1.5e-2)
    assert result.lr_finder is None  # no rate left to choose for the head


@pytest.mark.parametrize(
    "stages, match",
    [
        ([], "non-empty list"),
        ([((), 2)], r"`stages\[0\]` must be a tltk.Stage"),
        ([Stage(("nope",), 2)], r"`stages\[0\]\.unfrozen` must be a tuple of the group names"),
        ([Stage("top", 2)], "unfrozen` must be a tuple"),
        ([Stage(("top",), 2, cached=True)], "cannot train on cached features"),
        ([Stage((), 0)], r"`stages\[0\]\.epochs` must be an integer >= 1"),
        ([Stage((), 1, float("nan"))], r"`stages\[0\]\.learning_rate` must be"),
        ([Stage((), 1, probe=True)], r"`stages\[0\]` has probe=True but cached=False"),
    ],
)
def test_bad_stages_are_refused_by_index(stages, match):
    train, val = datasets(n_train=16)
    with pytest.raises(ValueError, match=match):
        fine_tune(build(), train, val, stages=stages, verbose=0)


class Seen(keras.callbacks.Callback):
    """The calls a callback gets (`("begin", None)`, `("epoch", n)`, `("end", None)`) and models."""

    def __init__(self):
        super().__init__()
        self.calls, self.models = [], set()

    def on_train_begin(self, logs=None):
        self.calls.append(("begin", None))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch", epoch))
        self.models.add(self.model.name)

    def on_train_end(self, logs=None):
        self.calls.append(("end", None))


@pytest.fixture(scope="module")
def logged(tmp_path_factory, data):
    """One run of a cached head stage (3 epochs) and two fine-tuning stages (1 epoch each), with
    CSVLogger, ModelCheckpoint, TensorBoard and a recorder."""
    folder = tmp_path_factory.mktemp("callbacks")
    seen = Seen()
    callbacks = [
        keras.callbacks.CSVLogger(folder / "log.csv"),
        keras.callbacks.ModelCheckpoint(folder / "epoch_{epoch}.keras"),
        keras.callbacks.TensorBoard(folder / "tb"),
        seen,
    ]
    model = build()
    result = fine_tune(
        model, *data, head_epochs=3, epochs=2, unfreeze=[1, 2], callbacks=callbacks, **FAST
    )
    assert [len(h["loss"]) for h in result.histories] == [3, 1, 1]
    assert result.stages[0]["cached"]
    return folder, seen, model


def test_callbacks_see_one_run_of_the_full_model(logged):
    _, seen, model = logged
    assert seen.calls == [("begin", None), *(("epoch", e) for e in range(5)), ("end", None)]
    assert seen.models == {model.name}  # the full model, also in the cached head stage


def test_csv_logger_keeps_every_stage_in_one_epoch_column(logged):
    folder, _, _ = logged
    with open(folder / "log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2, 3, 4]
    assert all(float(row["val_accuracy"]) >= 0 for row in rows)


def test_model_checkpoint_saves_the_full_model_in_every_stage(logged, data):
    folder, _, _ = logged
    images = next(iter(data[1]))[0]
    for epoch in (1, 3, 5):  # the cached head stage, then each fine-tuning stage
        saved = tltk.load_model(folder / f"epoch_{epoch}.keras")
        assert saved.input_shape == (None, 32, 32, 3)
        assert saved.predict(images, verbose=0).shape == (len(images), 3)


def test_tensorboard_logs_every_stage(logged):
    folder, _, _ = logged
    steps = {"train": set(), "validation": set()}
    for split in steps:
        for path in (folder / "tb" / split).glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    if value.tag == "epoch_loss":
                        steps[split].add(event.step)
    assert steps == {"train": set(range(5)), "validation": set(range(5))}


def test_doctor_says_whether_tensorboard_is_installed(monkeypatch):
    from tltk.doctor import run_checks

    def tensorboard_check():
        (check,) = [c for c in run_checks() if c.name == "optional: tensorboard"]
        return check

    assert tensorboard_check().ok
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    check = tensorboard_check()
    assert not check.ok and "tltk-keras[tensorboard]" in check.fix
