"""`fine_tune`: learning, frozen layers, the BatchNorm policy, the stage-1 rule, resuming."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk.objectives import objective
from tltk.run_state import RunState
from tltk.training import fine_tune

from tests.helpers import tiny_bn_cnn

SPEC = tiny_bn_cnn(
    "test_training_cnn",
    (("stem", 8, 1, 3), ("block1", 16, 2, 3), ("block2", 32, 2, 3), ("top", 32, 1, 1)),
    preprocessing="tf",
    initializer="he_normal",
)
GROUPS = ["stem", "block1", "block2", "top"]
COLOURS = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230]], "float32")


def shapes(n, seed, size=32):
    """Red squares, green disks and blue crosses at random places on dark noise: 3 classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(60, 20, (n, size, size, 3)).astype("float32")
    labels = rng.permutation(np.arange(n) % 3)
    for image, label in zip(images, labels):
        r = rng.integers(8, 13)
        cy, cx = rng.integers(r, size - r, 2)
        dy, dx = abs(yy - cy), abs(xx - cx)
        mask = [
            (dy <= r) & (dx <= r),
            dy**2 + dx**2 <= r * r,
            ((dy <= r // 3) & (dx <= r)) | ((dx <= r // 3) & (dy <= r)),
        ]
        image[mask[label]] = COLOURS[label] + rng.normal(0, 15, 3)
    return images.clip(0, 255), labels.astype("int32")


def datasets(n_train=96, n_val=48, batch=16, labels="int"):
    (x, y), (xv, yv) = shapes(n_train, 0), shapes(n_val, 1)
    if labels == "categorical":
        y, yv = np.eye(3, dtype="float32")[y], np.eye(3, dtype="float32")[yv]
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n_train, seed=0).batch(batch)
    return train, tf.data.Dataset.from_tensor_slices((xv, yv)).batch(batch)


def build(**kwargs):
    return tltk.build_classifier(SPEC.name, kwargs.pop("num_classes", 3), weights=None, **kwargs)


class Snapshots(keras.callbacks.Callback):
    """Copies of `target`'s weights (by layer and index) as each epoch begins (`at[epoch]`, the
    epochs of all stages counted on: `fine_tune`'s callbacks see one run) and as the run ends."""

    def __init__(self, target):
        super().__init__()
        self.target, self.at, self.final = target, {}, None

    def _copy(self):
        return {
            f"{layer.name}/{i}": np.array(w.numpy())
            for layer in _leaves(self.target)
            for i, w in enumerate(layer.weights)
        }

    def on_epoch_begin(self, epoch, logs=None):
        self.at[epoch] = self._copy()

    def on_train_end(self, logs=None):
        self.final = self._copy()


def _leaves(model):
    for layer in model.layers:
        yield from (_leaves(layer) if isinstance(layer, keras.Model) else [layer])


def _changed(before, after, prefix):
    return {k: not np.array_equal(before[k], after[k]) for k in before if k.startswith(prefix)}


FAST = dict(learning_rate=3e-2, early_stopping=False, verbose=0)


def test_fine_tune_learns_and_reports_each_stage():
    train, val = datasets()
    model = build()
    result = fine_tune(
        model, train, val, head_epochs=8, epochs=4, unfreeze=[1, 2], fine_tune_lr=3e-3, **FAST
    )

    assert result.model is model
    assert result.best_metric >= 0.8  # chance is 0.33
    assert [s["unfrozen"] for s in result.stages] == [[], ["top"], ["block2", "top"]]
    assert [len(h["val_accuracy"]) for h in result.histories] == [8, 2, 2]
    assert result.stages[0]["cached"] and not result.stages[1]["cached"]
    assert result.stages[0]["learning_rates"] == {"head": 3e-2}
    assert result.stages[2]["learning_rates"] == pytest.approx(
        {"head": 3e-3, "top": 3e-3 * 0.7, "block2": 3e-3 * 0.7**2}
    )
    # The best epoch: highest val_accuracy, ties to the lower val_loss, then to the earlier epoch.
    epochs = [
        (h["val_accuracy"][e], -h["val_loss"][e], -s, -e)
        for s, h in enumerate(result.histories)
        for e in range(len(h["val_accuracy"]))
    ]
    best = max(epochs)
    assert (result.best_metric, result.best_stage) == (best[0], 1 - best[2])
    assert result.stage1_metric == max(result.histories[0]["val_accuracy"])
    assert model.evaluate(val, verbose=0, return_dict=True)["accuracy"] == pytest.approx(
        result.best_metric
    )


def test_ties_of_the_monitor_go_to_the_lower_validation_loss():
    state = RunState({}, 2, "max")
    assert state.improves(0.9, 0.5)
    state.best_value, state.best_loss = 0.9, 0.5
    assert state.improves(0.9, 0.4) and not state.improves(0.9, 0.5)
    assert not state.improves(0.9, 0.6) and not state.improves(0.9, None)
    assert state.improves(0.91, 9.0) and not state.improves(0.89, 0.1)
    assert not state.improves(float("nan"), 0.1)


def test_gradual_unfreezes_one_more_group_per_stage_spread_over_epochs():
    train, val = datasets(n_train=48)
    result = fine_tune(build(), train, val, head_epochs=1, epochs=3, unfreeze="gradual", **FAST)
    assert [s["unfrozen"] for s in result.stages] == [[], GROUPS[-2:], GROUPS[-3:], GROUPS]
    assert [s["epochs"] for s in result.stages] == [1, 1, 1, 1]
    assert list(result.stages[3]["learning_rates"]) == ["head", "top", "block2", "block1", "stem"]


def test_by_default_everything_unfreezes_at_once_at_decayed_rates():
    train, val = datasets(n_train=48)
    result = fine_tune(build(), train, val, head_epochs=1, epochs=2, fine_tune_lr=1e-3, **FAST)
    assert [s["unfrozen"] for s in result.stages] == [[], GROUPS]
    assert [s["epochs"] for s in result.stages] == [1, 2]
    assert result.stages[1]["learning_rates"] == pytest.approx(
        {g: 1e-3 * 0.7**k for k, g in enumerate(["head", *reversed(GROUPS)])}
    )


@pytest.mark.parametrize("cache_features", [True, False])
def test_frozen_layers_are_bit_for_bit_unchanged(cache_features):
    train, val = datasets(n_train=48)
    model = build()
    snaps = Snapshots(model)
    fine_tune(
        model,
        train,
        val,
        head_epochs=2,
        epochs=2,
        unfreeze=[1],
        cache_features=cache_features,
        callbacks=[snaps],
        **FAST,
    )

    first, last = snaps.at[0], snaps.final
    for prefix in ("stem_", "block1_", "block2_"):
        assert not any(_changed(first, last, prefix).values()), prefix
    stage2 = _changed(snaps.at[2], snaps.final, "top_")  # stage 2 is epochs 2 and 3
    assert stage2["top_conv/0"] and not stage2["top_bn/2"] and not stage2["top_bn/3"]
    stage1 = _changed(snaps.at[0], snaps.at[2], "")
    assert stage1["predictions/0"] and not stage1["top_conv/0"]


@pytest.mark.parametrize("train_bn", [False, True])
def test_batchnorm_statistics_follow_the_policy(train_bn):
    train, val = datasets(n_train=48)
    model = build()
    snaps = Snapshots(model)
    fine_tune(
        model,
        train,
        val,
        head_epochs=1,
        epochs=1,
        unfreeze="all",
        train_bn=train_bn,
        callbacks=[snaps],
        cache_features=False,  # a 1-epoch head (no probe): stage 2 beats it and is kept
        **FAST,
    )

    changed = _changed(snaps.at[1], snaps.final, "")  # stage 2 is epoch 1
    for group in GROUPS:
        assert changed[f"{group}_conv/0"]
        stats = [changed[f"{group}_bn/2"], changed[f"{group}_bn/3"]]  # moving mean, moving variance
        assert all(stats) if train_bn else not any(stats), group


def test_never_ends_worse_than_stage_1_when_later_stages_hurt(capsys):
    train, val = datasets()
    model = build()
    snaps = Snapshots(model)
    # A fine-tuning rate of 3 with plain SGD wrecks the backbone: the later stages can only hurt.
    result = fine_tune(
        model,
        train,
        val,
        head_epochs=8,
        epochs=2,
        unfreeze="all",
        optimizer="sgd",
        learning_rate=3e-2,
        fine_tune_lr=3.0,
        lr_decay=1.0,
        early_stopping=False,
        callbacks=[snaps],
        verbose=1,
    )

    assert max(result.histories[1]["val_accuracy"]) < result.stage1_metric
    assert result.restored_stage1 and result.best_stage == 1
    assert result.best_metric == result.stage1_metric >= 0.8
    after_stage1, final = snaps.at[8], Snapshots(model)._copy()  # stage 2 begins at epoch 8
    assert all(np.array_equal(after_stage1[k], final[k]) for k in final)
    assert model.evaluate(val, verbose=0, return_dict=True)["accuracy"] == pytest.approx(
        result.stage1_metric
    )
    assert "restored the stage-1 weights" in capsys.readouterr().out


class Kill(keras.callbacks.Callback):
    """Raises at the end of epoch `epoch` of the run, as a killed process would stop."""

    def __init__(self, target, epoch):
        super().__init__()
        self.target, self.epoch, self.weights = target, epoch, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.weights = self.target.get_weights()
            raise RuntimeError("simulated kill")


class Epochs(keras.callbacks.Callback):
    """Records the epoch number of every epoch run, and the weights as the first begins."""

    def __init__(self, target):
        super().__init__()
        self.target, self.seen, self.weights = target, [], None

    def on_epoch_begin(self, epoch, logs=None):
        if self.weights is None:
            self.weights = self.target.get_weights()
        self.seen.append(epoch)


@pytest.mark.parametrize("stage", [1, 2])
def test_killed_run_resumes_from_its_checkpoint(tmp_path, stage):
    train, val = datasets(n_train=48)
    settings = dict(
        head_epochs=3, epochs=3, unfreeze="all", checkpoint_dir=tmp_path / "run", **FAST
    )
    model = build()
    kill = Kill(model, epoch=1 if stage == 1 else 4)  # epoch 1 of stage 1, or of stage 2
    with pytest.raises(RuntimeError, match="simulated kill"):
        fine_tune(model, train, val, callbacks=[kill], **settings)

    keras.utils.set_random_seed(123)
    fresh = build()  # a new process: other initial weights, restored from the checkpoint
    epochs = Epochs(fresh)
    result = fine_tune(fresh, train, val, callbacks=[epochs], **settings)

    # Stage 1 is not trained again after it finished; the killed stage goes on at epoch 2 of 3,
    # and the epochs count on across stages (stage 2 is epochs 3-5), resumed or not.
    assert epochs.seen == ([2, 3, 4, 5] if stage == 1 else [5])
    for saved, restored in zip(kill.weights, epochs.weights):
        np.testing.assert_array_equal(saved, restored)
    assert [len(h["val_accuracy"]) for h in result.histories] == [3, 3]

    again = Epochs(fresh)
    with pytest.warns(UserWarning, match="finished run"):
        repeat = fine_tune(fresh, train, val, callbacks=[again], **settings)
    assert again.seen == [] and repeat.best_metric == result.best_metric


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    train, val = datasets(n_train=32)
    fine_tune(build(), train, val, head_epochs=1, epochs=0, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(ValueError, match="other settings"):
        fine_tune(build(), train, val, head_epochs=2, epochs=0, checkpoint_dir=tmp_path, **FAST)


def test_cached_and_uncached_head_training_both_learn_and_agree_with_the_model():
    train, val = datasets()
    for cache in (True, False):
        keras.utils.set_random_seed(0)
        model = build()
        result = fine_tune(
            model, train, val, head_epochs=10, epochs=0, cache_features=cache, **FAST
        )
        assert result.stages[0]["cached"] is cache
        assert result.best_metric >= 0.8
        assert model.evaluate(val, verbose=0, return_dict=True)["accuracy"] == pytest.approx(
            result.best_metric
        )


def test_augmented_model_caches_several_views_and_learns():
    train, val = datasets()
    model = build(augmentation=keras.layers.RandomFlip("horizontal_and_vertical", seed=0))
    result = fine_tune(model, train, val, head_epochs=10, epochs=0, augmented_views=3, **FAST)
    assert result.stages[0]["cached"]
    assert result.best_metric >= 0.8


def test_one_hot_labels_and_multi_label_outputs_get_matching_losses():
    train, val = datasets(labels="categorical")
    result = fine_tune(build(), train, val, head_epochs=10, epochs=0, **FAST)
    assert result.best_metric >= 0.8

    multi_label = build(num_classes=3, multi_label=True)
    loss, metrics = objective(multi_label, train)
    assert isinstance(loss, keras.losses.BinaryCrossentropy) and [m.name for m in metrics] == [
        "accuracy",
        "auc",
    ]
    result = fine_tune(multi_label, train, val, head_epochs=10, epochs=0, monitor="val_auc", **FAST)
    assert result.monitor == "val_auc" and result.best_metric >= 0.9
    loss, _ = objective(build(classifier_activation=None), datasets(n_train=16)[0])
    assert isinstance(loss, keras.losses.SparseCategoricalCrossentropy) and loss.from_logits
    with pytest.raises(ValueError, match="pass `loss`"):
        objective(build(classifier_activation=None), train)
    with pytest.raises(ValueError, match="model has 4 outputs: build it with num_classes=3"):
        objective(build(num_classes=4), train)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(head_epochs=0, epochs=0), "nothing to train"),
        (dict(epochs=-1), "epochs"),
        (dict(learning_rate=0), "learning_rate"),
        (dict(lr_decay=1.5), "lr_decay"),
        (dict(warmup=1.0), "warmup"),
        (dict(optimizer="lamb"), "optimizer"),
        (dict(monitor="accuracy"), "monitor"),
        (dict(unfreeze=["nope"]), "group names"),
        (dict(unfreeze=[1, 2, 3], epochs=2), "at least as many"),
        (dict(callbacks=[object()]), "callbacks"),
    ],
)
def test_bad_arguments_raise_before_training(kwargs, match):
    train, val = datasets(n_train=16)
    with pytest.raises(ValueError, match=match):
        fine_tune(build(), train, val, verbose=0, **kwargs)


def test_datasets_must_be_tf_data():
    x, y = shapes(8, 0)
    with pytest.raises(ValueError, match="`train` must be a tf.data.Dataset"):
        fine_tune(build(), (x, y), None, verbose=0)
