"""L2-SP and EWC in `fine_tune` (issue 22): the decoupled pulls, their logs, `tltk.fisher`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tltk
from tltk import regularizers
from tltk.freezing import layer_groups
from tltk.lr_multipliers import decayed_multipliers, discriminative_optimizer
from tltk.regularizers import Fisher, fisher
from tltk.training import fine_tune

from tests.test_training import build, datasets, shapes

ONE_STAGE = dict(head_epochs=0, epochs=2, learning_rate=3e-2, fine_tune_lr=3e-2, verbose=0)


def _backbone(model):
    return [np.array(w.numpy()) for w in model.backbone.weights]


class _Capture(keras.callbacks.Callback):
    """Each epoch's logs and the backbone's trainable weights as the epoch ends."""

    def __init__(self, target):
        super().__init__()
        self.target, self.seen = target, []

    def on_epoch_end(self, epoch, logs=None):
        weights = [np.array(w.numpy()) for w in self.target.backbone.weights]
        trainable = [
            any(w is t for t in self.target.backbone.trainable_weights)
            for w in self.target.backbone.weights
        ]
        self.seen.append((dict(logs), weights, trainable))


def test_the_l2sp_penalty_equals_its_formula_and_is_logged():
    keras.utils.set_random_seed(1)
    model = build()
    start = _backbone(model)
    capture = _Capture(model)
    result = fine_tune(
        model,
        *datasets(),
        regularizer="l2sp",
        regularizer_strength=0.5,
        callbacks=[capture],
        **ONE_STAGE,
    )
    assert result.histories[0]["l2sp"] == [logs["l2sp"] for logs, _, _ in capture.seen]
    for logs, weights, trainable in capture.seen:
        formula = sum(
            0.25 * np.sum((w - w0) ** 2) for w, w0, t in zip(weights, start, trainable) if t
        )
        assert logs["l2sp"] == pytest.approx(formula, rel=1e-4) and formula > 0
    assert all(w.constraint is None for w in model.backbone.weights)  # removed afterwards


@pytest.mark.parametrize("strength", [0.7, 50.0])
def test_the_decoupled_pull_is_one_optimizer_step_then_its_formula(strength):
    """`w = u - min(lr * strength, 1) * (u - w0)`: `u` the optimizer's step alone, `lr` the rate
    of the weight's group (SGD at 0.1 times 0.5 per group); at 50 every factor is capped at 1."""
    keras.utils.set_random_seed(5)
    model = tltk.unfreeze(build(dropout=0.0), "all")
    x, y = shapes(8, 0)
    start = model.get_weights()
    multipliers = decayed_multipliers(model, 0.5)
    rate = {
        w.path: 0.1 * multipliers[g.name]
        for g in layer_groups(model)
        for layer in g.layers
        for w in layer.weights
    }
    after = []
    for regularizer in (None, "l2sp"):
        model.set_weights(start)
        scaled = {g: m for g, m in multipliers.items() if m != 1}
        optimizer = discriminative_optimizer(keras.optimizers.SGD(0.1), scaled, model=model)
        model.compile(optimizer, "sparse_categorical_crossentropy")
        with regularizers.anchored(model, regularizer, strength):
            model.train_on_batch(x, y)
        after.append(_backbone(model))
    moved = 0
    for w, u, w0, v in zip(after[1], after[0], _backbone_of(start, model), model.backbone.weights):
        factor = min(rate[v.path] * strength, 1.0)
        np.testing.assert_allclose(w, u - factor * (u - w0), rtol=1e-5, atol=1e-7)
        moved += np.sum(np.abs(u - w0))
    assert moved > 0 and all(w.constraint is None for w in model.backbone.weights)


def _backbone_of(weights, model):
    """The backbone's part of `model.get_weights()`-ordered `weights`."""
    values = dict(zip((id(w) for w in model.weights), weights))
    return [values[id(w)] for w in model.backbone.weights]


def test_l2sp_holds_the_backbone_nearer_its_start_than_plain_fine_tuning():
    moved = []
    for regularizer in (None, "l2sp"):
        keras.utils.set_random_seed(2)
        model = build()
        start = _backbone(model)
        train, val = datasets()
        fine_tune(
            model, train, val, regularizer=regularizer, regularizer_strength=20.0, **ONE_STAGE
        )
        moved.append(sum(np.sum((w - w0) ** 2) for w, w0 in zip(_backbone(model), start)))
    assert moved[1] < 0.5 * moved[0]


def test_ewc_with_zero_fisher_is_plain_fine_tuning():
    runs = []
    for regularizer in (None, "ewc"):
        keras.utils.set_random_seed(3)
        model = build()
        zero = Fisher(model.backbone.name, [np.zeros(w.shape) for w in model.backbone.weights], 1)
        train, val = datasets(n_train=48, n_val=16)
        kwargs = dict(regularizer="ewc", fisher=zero) if regularizer else {}
        fine_tune(model, train, val, **ONE_STAGE, **kwargs)
        runs.append(_backbone(model))
    for plain, ewc in zip(*runs):
        np.testing.assert_allclose(ewc, plain, rtol=1e-5, atol=1e-6)


def test_fisher_is_the_mean_squared_per_example_gradient():
    keras.utils.set_random_seed(4)
    model = build()
    x, y = shapes(6, 0)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)  # one order on every read
    estimate = fisher(model, train, max_examples=4)
    assert estimate.examples == 4 and estimate.backbone == model.backbone.name
    loss = keras.losses.SparseCategoricalCrossentropy()
    variables = model.backbone.trainable_weights or model.backbone.weights
    expected = [np.zeros(w.shape) for w in model.backbone.weights]
    examples = [(x[i : i + 1], y[i : i + 1]) for x, y in train for i in range(len(x))][:4]
    watched = list(model.backbone.weights)
    for x, y in examples:
        with tf.GradientTape() as tape:
            tape.watch([w.value for w in watched])
            value = loss(y, model(x, training=False))
        for total, grad in zip(expected, tape.gradient(value, [w.value for w in watched])):
            if grad is not None:
                total += grad.numpy() ** 2 / 4
    for got, want in zip(estimate.values, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-9)
    assert variables and any(np.any(v > 0) for v in estimate.values)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(regularizer="l3"), "`regularizer` must be None, 'l2sp' or 'ewc'"),
        (dict(regularizer="ewc"), "needs `fisher=tltk.fisher"),
        (dict(regularizer="l2sp", regularizer_strength=-1.0), "`regularizer_strength` must be"),
        (dict(fisher=Fisher("x", [], 1)), "`fisher` is used by regularizer='ewc' only"),
        (dict(regularizer="ewc", fisher=Fisher("other", [np.zeros(3)], 1)), "do not match"),
    ],
)
def test_bad_regularizer_arguments_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fine_tune(build(), *datasets(n_train=16), **ONE_STAGE, **kwargs)


def test_fisher_is_public():
    assert tltk.fisher is fisher


def test_tltk_train_passes_the_regularizer_to_fine_tune(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tltk import workflow
    from tltk.cli import main

    from PIL import Image

    folder = tmp_path / "photos"
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (32, 32), (40 * i, 100 if label == "a" else 0, 0)).save(
                folder / label / f"{i}.png"
            )
    seen = {}

    def stop(*args, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stops the run once fine_tune is reached

    monkeypatch.setattr(workflow, "fine_tune", stop)
    args = ["train", str(folder), "--backbone", "tltk_glyphnet", "--out", str(tmp_path / "run")]
    CliRunner().invoke(main, [*args, "--regularizer", "l2sp", "--regularizer-strength", "0.3"])
    assert seen["regularizer"] == "l2sp" and seen["regularizer_strength"] == 0.3
    bad = CliRunner().invoke(main, [*args, "--regularizer", "ewc"])
    assert bad.exit_code == 2 and "Invalid value for '--regularizer'" in bad.output
