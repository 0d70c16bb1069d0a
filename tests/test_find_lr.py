"""`find_lr`: the range test leaves the model as it was and suggests a rate that trains."""

import keras
import numpy as np
import pytest
from PIL import Image

import tltk
from tests.test_training import SPEC, datasets
from tltk.lr_finder import find_lr


def _model():
    return tltk.build_classifier(SPEC.name, 3, weights=None)


def _state(model):
    return [np.array(w) for w in model.get_weights()]


def test_range_test_restores_every_weight_and_saves_a_plot(tmp_path):
    train, _ = datasets()
    model = tltk.unfreeze(_model(), "all", train_bn=True)  # BatchNorm statistics would move too
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    compiled_optimizer, before = model.optimizer, _state(model)

    result = find_lr(
        model, train, min_lr=1e-5, max_lr=10.0, steps=60, plot_path=tmp_path / "lr.png"
    )

    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer is compiled_optimizer
    n = len(result.learning_rates)
    assert 10 < n <= 60 and len(result.losses) == len(result.raw_losses) == n
    assert result.learning_rates[0] == pytest.approx(1e-5)
    assert np.all(np.diff(result.learning_rates) > 0)
    assert 1e-5 <= result.suggestion <= 10.0
    assert result.losses.min() < result.losses[0]  # the loss fell somewhere along the range
    with Image.open(tmp_path / "lr.png") as image:
        assert image.format == "PNG" and image.size == (600, 400)


def test_stops_when_the_loss_diverges():
    train, _ = datasets()
    model = tltk.unfreeze(_model(), "all")
    result = find_lr(model, train, min_lr=1e-4, max_lr=1e4, steps=100, optimizer="sgd")
    assert len(result.learning_rates) < 100
    assert result.suggestion < result.learning_rates[-1]


def test_suggested_rate_trains_the_head():
    train, val = datasets()
    model = _model()
    result = find_lr(model, train, min_lr=1e-5, max_lr=10.0, steps=60)
    model.compile(
        optimizer=keras.optimizers.AdamW(result.suggestion),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(train, epochs=12, shuffle=False, verbose=0)
    assert model.evaluate(val, verbose=0, return_dict=True)["accuracy"] >= 0.8  # chance is 0.33


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_lr=0), "min_lr"),
        (dict(min_lr=1.0, max_lr=0.1), "greater than"),
        (dict(steps=5), "steps"),
        (dict(smoothing=1.0), "smoothing"),
        (dict(optimizer="lamb"), "optimizer"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    train, _ = datasets(n_train=16)
    with pytest.raises(ValueError, match=match):
        find_lr(_model(), train, **kwargs)


def test_data_must_be_a_dataset():
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        find_lr(_model(), np.zeros((4, 32, 32, 3)))
