"""Replay in `fine_tune` (issue 22): the source head's loss logged and trained on, nothing kept."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk.training import fine_tune

from tests.test_training import build, datasets, shapes

ONE_STAGE = dict(head_epochs=0, epochs=2, learning_rate=1e-2, fine_tune_lr=1e-2, verbose=0)


def _source_batches():
    x, y = shapes(8, 7)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8), x, y  # one batch, every step


class _ExpectedReplayLoss(keras.callbacks.Callback):
    """As each epoch (one step) begins: the source classifier's loss on the source batch with
    the fine-tuned model's backbone in it (the source head re-attached); then the logs."""

    def __init__(self, target, checker, x, y):
        super().__init__()
        self.target, self.checker, self.x, self.y = target, checker, x, y
        self.expected, self.logs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.checker.backbone.set_weights(self.target.backbone.get_weights())
        predictions = self.checker(self.x, training=False)
        loss = keras.losses.sparse_categorical_crossentropy(self.y, predictions)
        self.expected.append(float(np.mean(loss)))

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs))


@pytest.fixture(scope="module")
def replayed():
    keras.utils.set_random_seed(11)
    source = build(num_classes=4)
    source_weights = [np.array(w) for w in source.get_weights()]
    flags = [layer.trainable for layer in source.layers]
    checker = type(source).from_config(source.get_config())
    checker.set_weights(source_weights)
    model = build()
    layers = [layer.name for layer in model.layers]
    data, x, y = _source_batches()
    capture = _ExpectedReplayLoss(model, checker, x, y)
    train, val = datasets(n_train=16, n_val=16)  # one batch: one step per epoch
    result = fine_tune(
        model, train, val, replay=tltk.Replay(data, source), callbacks=[capture], **ONE_STAGE
    )
    return dict(
        model=model,
        layers=layers,
        result=result,
        capture=capture,
        source=source,
        source_weights=source_weights,
        flags=flags,
    )


def test_the_logged_replay_loss_is_the_source_heads_loss_on_the_batch(replayed):
    capture, result = replayed["capture"], replayed["result"]
    logged = [logs["replay_loss"] for logs in capture.logs]
    assert result.histories[0]["replay_loss"] == logged and len(logged) == 2
    np.testing.assert_allclose(logged, capture.expected, rtol=1e-4)
    assert logged[1] != pytest.approx(logged[0])  # the backbone trained between the two
    assert "val_replay_loss" not in capture.logs[0]


def test_the_model_keeps_no_replay_layers_and_the_source_model_is_untouched(replayed):
    model, source = replayed["model"], replayed["source"]
    assert [layer.name for layer in model.layers] == replayed["layers"]
    assert model.count_params() == build().count_params()
    for before, after in zip(replayed["source_weights"], source.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert [layer.trainable for layer in source.layers] == replayed["flags"]


def test_replay_is_public():
    assert tltk.Replay is tltk.replay.Replay


@pytest.mark.parametrize(
    "replay, match",
    [
        (("data", "head"), "`replay` must be None or tltk.Replay"),
        (lambda d, s: tltk.Replay(d, s, weight=-1.0), "`replay.weight` must be"),
        (lambda d, s: tltk.Replay(d.unbatch(), s), "batched source"),
        (lambda d, s: tltk.Replay(d.map(lambda x, y: (x[:, :16], y)), s), "input shape"),
        (lambda d, s: tltk.Replay(d, keras.Sequential([])), "one-head tltk classifier"),
    ],
)
def test_bad_replay_arguments_are_explained(replay, match):
    data, _, _ = _source_batches()
    if callable(replay):
        replay = replay(data, build())
    with pytest.raises(ValueError, match=match):
        fine_tune(build(), *datasets(n_train=16), replay=replay, **ONE_STAGE)


def test_a_source_head_on_other_features_is_refused():
    data, _, _ = _source_batches()
    source = tltk.build_classifier("tltk_glyphnet", 3, weights=None)
    with pytest.raises(ValueError, match="pass the source classifier of the same backbone"):
        fine_tune(build(), *datasets(n_train=16), replay=tltk.Replay(data, source), **ONE_STAGE)


def test_replay_under_a_distribute_strategy_is_refused():
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        model = build()
    data, _, _ = _source_batches()
    with pytest.raises(ValueError, match="does not run under a tf.distribute strategy"):
        fine_tune(model, *datasets(n_train=16), replay=tltk.Replay(data, build()), **ONE_STAGE)
