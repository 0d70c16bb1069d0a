"""The linear probe of the head stage (`tltk.probe`, issue 18): scikit-learn's solution copied
into the head, and `fine_tune` keeping it only where it beats the head Adam trained."""

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tltk import training
from tltk.probe import C_GRID, Probe, fit_probe, linear_layer
from tltk.run_record import training_history
from tltk.stages import Stage
from tltk.training import fine_tune

from tests.test_training import build, datasets


def _features(n, classes, seed, dim=6):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centers = np.random.default_rng(0).normal(size=(classes, dim))
    return (centers[y] + rng.normal(scale=1.2, size=(n, dim))).astype("float32"), y


@pytest.mark.parametrize("classes, activation", [(4, "softmax"), (2, "softmax"), (2, "sigmoid")])
def test_the_probe_in_a_dense_layer_predicts_as_scikit_learn_does(classes, activation):
    (x, y), (vx, vy) = _features(80, classes, 1), _features(40, classes, 2)
    units = 1 if activation == "sigmoid" else classes
    probe = fit_probe([(x, y)], (vx, vy), units)
    assert probe.C in C_GRID
    scale = np.sqrt(np.mean(np.square(x)))  # `C` is for the features over their RMS
    reference = LogisticRegression(C=probe.C, max_iter=5000, tol=1e-8).fit(x / scale, y)
    dense = keras.layers.Dense(units, activation=activation)
    dense.build((None, x.shape[1]))
    dense.set_weights([probe.kernel.astype("float32"), probe.bias.astype("float32")])
    predicted = np.asarray(dense(vx))
    predicted = np.concatenate([1 - predicted, predicted], 1) if units == 1 else predicted
    np.testing.assert_allclose(predicted, reference.predict_proba(vx / scale), atol=2e-3)
    losses = [
        -np.mean(
            np.log(
                LogisticRegression(C=c, max_iter=5000)
                .fit(x, y)
                .predict_proba(vx)[np.arange(len(vy)), vy]
            )
        )
        for c in C_GRID
    ]
    # `C` has the lowest validation log loss of the grid (up to the solver's tolerance).
    assert losses[C_GRID.index(probe.C)] == pytest.approx(min(losses), rel=5e-2)
    assert probe.validation_log_loss == pytest.approx(min(losses), rel=5e-2)


def test_class_weights_and_one_hot_labels_and_missing_classes():
    (x, y), (vx, vy) = _features(60, 3, 1), _features(30, 3, 2)
    plain = fit_probe([(x, y)], (vx, vy), 3)
    one_hot = fit_probe([(x, np.eye(3)[y])], (vx, np.eye(3)[vy]), 3)
    np.testing.assert_allclose(one_hot.kernel, plain.kernel, rtol=1e-5, atol=1e-6)
    weighted = fit_probe([(x, y)], (vx, vy), 3, class_weight={0: 5.0, 1: 1.0, 2: 1.0})
    pushed = (x @ weighted.kernel + weighted.bias).argmax(1) == 0
    assert pushed.sum() > ((x @ plain.kernel + plain.bias).argmax(1) == 0).sum()
    assert fit_probe([(x[y < 2], y[y < 2])], (vx, vy), 3) is None  # class 2 has no example
    assert fit_probe([(x, np.full((60, 3), 1 / 3))], (vx, vy), 3) is None  # soft labels


def test_only_a_linear_softmax_or_one_unit_sigmoid_head_is_probed():
    assert linear_layer(
        keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dropout(0.2),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )
    )
    for head in (
        [keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, activation="softmax")],
        [keras.layers.Dense(3)],  # logits or regression
        [keras.layers.Dense(3, activation="sigmoid")],  # multi-label
        [keras.layers.Dense(3, activation="softmax", use_bias=False)],
    ):
        assert linear_layer(keras.Sequential([keras.Input((4,)), *head])) is None
    assert linear_layer(_head(build())) is not None
    assert linear_layer(_head(build(hidden_units=(8,)))) is None


def _head(model):
    from tltk.feature_cache import FeatureCache

    return FeatureCache(model, *datasets(n_train=16, n_val=8)).head


def test_fine_tune_keeps_the_probe_where_it_beats_the_trained_head(tmp_path):
    """One epoch at a tiny rate leaves Adam's head near its random start: the probe wins, its
    weights are the model's, and a resumed finished run returns the same record."""
    keras.utils.set_random_seed(3)
    model = build()
    train, val = datasets()
    plan = [Stage((), 1, 1e-5, cached=True, converge=True, probe=True)]
    result = fine_tune(model, train, val, stages=plan, checkpoint_dir=tmp_path, verbose=0)
    probe = result.probe
    assert probe["kept"] and probe["stage"] == 1 and probe["C"] in C_GRID
    assert probe["val_accuracy"] > result.histories[0]["val_accuracy"][0]
    assert result.best_stage == 1 and result.best_epoch is None
    assert result.best_metric == result.stage1_metric == probe["val_accuracy"]
    evaluated = model.evaluate(val, verbose=0, return_dict=True)
    assert evaluated["accuracy"] == pytest.approx(probe["val_accuracy"])
    assert evaluated["loss"] == pytest.approx(probe["val_loss"], rel=1e-4)

    history = training_history(result)
    assert history["best_epoch"] is None and history["probe"] == probe

    with pytest.warns(UserWarning, match="finished run"):
        again = fine_tune(build(), *datasets(), stages=plan, checkpoint_dir=tmp_path, verbose=0)
    assert again.probe == probe and again.best_epoch is None


def test_fine_tune_keeps_the_trained_head_where_it_is_better_on_both(monkeypatch, capsys):
    """A probe that predicts the uniform distribution (zero weights) loses to a converged head
    on validation loss and accuracy both: the head stays, and the model has its best epoch."""

    def uniform(train, validation, units, class_weight=None):
        dim = train[0][0].shape[-1]
        return Probe(1.0, np.zeros((dim, units)), np.zeros(units), float(np.log(units)))

    monkeypatch.setattr(training, "fit_probe", uniform)
    keras.utils.set_random_seed(3)
    model = build()
    plan = [Stage((), 60, 3e-2, cached=True, converge=True, patience=10, probe=True)]
    result = fine_tune(model, *datasets(), stages=plan, verbose=1)
    assert "C=1): val_accuracy 0.3333, val_loss 1.0986: the trained head is better on both." in (
        capsys.readouterr().out
    )
    assert not result.probe["kept"] and result.best_epoch is not None
    accuracy = model.evaluate(datasets()[1], verbose=0, return_dict=True)["accuracy"]
    assert accuracy == pytest.approx(result.best_metric) and result.best_metric > 0.8


def test_no_probe_without_the_flag_or_for_a_hidden_layer_head():
    keras.utils.set_random_seed(3)
    plan = [Stage((), 2, 1e-2, cached=True, converge=True)]
    assert fine_tune(build(), *datasets(), stages=plan, verbose=0).probe is None
    deep = fine_tune(build(hidden_units=(8,)), *datasets(), epochs=0, head_epochs=2, verbose=0)
    assert deep.stages[0]["probe"] and deep.probe is None and deep.best_epoch is not None
